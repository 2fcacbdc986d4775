//! Secrets out of logs: URLs and option values shown in `Debug`, `Display` and `tracing`
//! fields go through these helpers, so a password, token or key never reaches a log line.

use std::fmt;

/// What a hidden secret is shown as.
pub const REDACTED: &str = "<redacted>";

/// Query parameters whose values are secrets.
const SECRET_PARAMS: [&str; 9] = [
    "password", "pass", "passwd", "token", "auth", "secret", "key", "nkey", "jwt",
];

/// `url` with its user information and secret query values hidden, for logs:
/// `redis://user:hunter2@host:6379/0` shows as `redis://user:<redacted>@host:6379/0`,
/// `nats://s3cr3t@host` (a token) as `nats://<redacted>@host`.
///
/// ```
/// let shown = neffos::redact::url("redis://app:hunter2@cache:6379/0?token=abc").to_string();
/// assert_eq!(shown, "redis://app:<redacted>@cache:6379/0?token=<redacted>");
/// ```
pub fn url(url: &str) -> RedactedUrl<'_> {
    RedactedUrl(url)
}

/// A URL displayed without its secrets (see [`url`]).
#[derive(Clone, Copy)]
pub struct RedactedUrl<'a>(&'a str);

impl fmt::Display for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = self.0;
        let (scheme, rest) = match text.find("://") {
            Some(i) => (&text[..i + 3], &text[i + 3..]),
            None => ("", text),
        };
        f.write_str(scheme)?;
        // The authority ends at the first '/', '?' or '#'; user info ends at its last '@'.
        let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => write!(f, "{user}:{REDACTED}")?,
                    None => f.write_str(REDACTED)?,
                }
                f.write_str(&authority[at..])?;
            }
            None => f.write_str(authority)?,
        }
        let (path, query) = match tail.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (tail, None),
        };
        f.write_str(path)?;
        if let Some(query) = query {
            let (query, fragment) = match query.split_once('#') {
                Some((q, frag)) => (q, Some(frag)),
                None => (query, None),
            };
            f.write_str("?")?;
            for (i, pair) in query.split('&').enumerate() {
                if i > 0 {
                    f.write_str("&")?;
                }
                match pair.split_once('=') {
                    Some((k, _)) if is_secret_param(k) => write!(f, "{k}={REDACTED}")?,
                    _ => f.write_str(pair)?,
                }
            }
            if let Some(fragment) = fragment {
                write!(f, "#{fragment}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for RedactedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

fn is_secret_param(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    SECRET_PARAMS.iter().any(|s| key.contains(s))
}

#[cfg(test)]
mod tests {
    use super::url;

    #[test]
    fn hides_passwords_tokens_and_secret_parameters() {
        let cases = [
            ("redis://:hunter2@h:6379", "redis://:<redacted>@h:6379"),
            (
                "redis://u:hunter2@h:6379/0",
                "redis://u:<redacted>@h:6379/0",
            ),
            ("nats://hunter2@h:4222", "nats://<redacted>@h:4222"),
            ("tls://u:p%40ss@h", "tls://u:<redacted>@h"),
            (
                "ws://h/echo?token=hunter2&room=a",
                "ws://h/echo?token=<redacted>&room=a",
            ),
            ("h:4222", "h:4222"),
            (
                "redis+unix:///tmp/r.sock?pass=hunter2",
                "redis+unix:///tmp/r.sock?pass=<redacted>",
            ),
            ("ws://h/p?x=1#frag", "ws://h/p?x=1#frag"),
        ];
        for (given, shown) in cases {
            assert_eq!(url(given).to_string(), shown, "{given}");
            assert!(!format!("{:?}", url(given)).contains("hunter2"));
        }
    }

    #[test]
    fn an_at_sign_in_the_password_does_not_leak_its_tail() {
        let shown = url("redis://u:a@b@host:1").to_string();
        assert_eq!(shown, "redis://u:<redacted>@host:1");
    }
}
