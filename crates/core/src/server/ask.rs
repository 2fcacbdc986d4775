//! [`Server::ask`]: a request to one connection, local or on another instance, and its reply.

use std::time::Duration;

use neffos_protocol::{Envelope, EnvelopeKind, Message};
use tokio::sync::oneshot;

use bytestring::ByteString;

use super::{Server, ServerShared, Target};
use crate::error::{AskError, AskErrorKind, RemoteError};
use crate::exchange::Topic;

impl Server {
    /// Asks the connection with ID `id` (on this or, through the exchange, any instance)
    /// in `msg`'s namespace, and waits for its reply until `timeout`.
    ///
    /// ```no_run
    /// # async fn run(server: neffos::Server) -> Result<(), neffos::AskError> {
    /// use std::time::Duration;
    /// use neffos::Message;
    /// let reply = server
    ///     .ask("user-42", Message::new("chat", "question", "ready?"), Duration::from_secs(5))
    ///     .await?;
    /// # let _ = reply; Ok(()) }
    /// ```
    pub async fn ask(
        &self,
        id: &str,
        msg: Message,
        timeout: Duration,
    ) -> Result<Message, AskError> {
        let namespace = msg.namespace.clone();
        let namespace = &*namespace;
        if let Some(conn) = self.connections_by_id(id).into_iter().next() {
            return conn.0.ask(msg, timeout).await;
        }
        let context = || crate::conn::ask_context(&msg, id);
        if self.0.exchanges.is_empty() {
            return Err(AskError::new(AskErrorKind::UnknownConnection, context()));
        }
        let token = self.0.next_seq();
        let (tx, rx) = oneshot::channel();
        self.0.remote_asks.lock().insert(token, tx);
        let _guard = RemoteAskGuard {
            shared: &self.0,
            token,
        };
        let target = Target::conn(namespace, id);
        let env = Envelope::new(
            self.0.instance,
            token,
            EnvelopeKind::Ask,
            target.envelope_target(),
            &msg,
        )
        .with_token(token);
        let payload = self
            .0
            .encode(&env)
            .map_err(|e| e.into_kind(AskErrorKind::Exchange, context()))?;
        self.0.publish(Topic::Conn(id.to_owned()), payload);
        // Fails fast when every live instance says it does not hold `id` (cluster on).
        let reply = tokio::select! {
            reply = tokio::time::timeout(timeout, rx) => match reply {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => {
                    let context = format!("{} (server shutting down)", context());
                    return Err(AskError::new(AskErrorKind::Closed, context));
                }
                Err(_) => {
                    // Nobody answered: no instance has this ID, or its owner did not reply.
                    let context = format!("{} within {timeout:?}", context());
                    return Err(AskError::new(AskErrorKind::Timeout, context));
                }
            },
            () = crate::cluster::absent(&self.0, id, timeout) => {
                let context = format!("{} (no live instance holds it)", context());
                return Err(AskError::new(AskErrorKind::UnknownConnection, context));
            }
        };
        let mut reply_msg = reply.to_message();
        reply_msg.namespace = ByteString::from(namespace);
        match reply_msg.error() {
            Some(text) => {
                Err(AskError::new(AskErrorKind::Remote, context())
                    .with_source(RemoteError::new(text)))
            }
            None => Ok(reply_msg),
        }
    }

    /// Asks connection `id` with `event` and `question` as a JSON body in `namespace`, and
    /// decodes the JSON reply into `R` (an undecodable reply is an [`AskError`] of kind
    /// [`Decode`](AskErrorKind::Decode)).
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub async fn ask_json<Q, R>(
        &self,
        namespace: &str,
        id: &str,
        event: &str,
        question: &Q,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        Q: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        type F = crate::body::Json<()>;
        let context = || crate::conn::ask_context(&Message::new(namespace, event, ""), id);
        let msg = crate::body::message::<F, Q>(namespace, event, question)
            .map_err(|e| e.into_kind(AskErrorKind::NotSent, context()))?;
        let reply = self.ask(id, msg, timeout).await?;
        crate::body::decode::<F, R>(&reply)
            .map_err(|e| e.into_kind(AskErrorKind::Decode, context()))
    }
}

struct RemoteAskGuard<'a> {
    shared: &'a ServerShared,
    token: u64,
}

impl Drop for RemoteAskGuard<'_> {
    fn drop(&mut self) {
        self.shared.remote_asks.lock().remove(&self.token);
    }
}
