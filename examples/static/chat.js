// The chat page: neffos.js (served by the example at /neffos.js) in the browser.
//
// Username -> dial("/echo", ..., { headers: { "X-Username": name } }); in browsers neffos.js
// sends headers as `X-Websocket-Header-*` query parameters and the server uses the name as
// the connection ID. Then: connect namespace "default", join/leave rooms, emit "chat";
// `@bob hi` (or a click on bob's name) emits "private" to bob; the server's "question" Ask
// (sent by `GET /ask?to=<user>&question=...`) is shown and answered automatically. Who is
// online, and who is in our room, across instances: `GET /online[?room=…]`, refreshed on
// every notice and every 10 s.
import neffos from "/neffos.js";

const NAMESPACE = "default";
const $ = (id) => document.getElementById(id);

/** A random key kept for this tab's life, presented on every (re)connection. */
function sessionKey() {
  let key = sessionStorage.getItem("neffos-session");
  if (!key) {
    key = Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) =>
      b.toString(16).padStart(2, "0"),
    ).join("");
    sessionStorage.setItem("neffos-session", key);
  }
  return key;
}

let nsConn = null; // the connected namespace (replaced after an automatic reconnection)
let room = null; // the joined room's name, if any
let me = null; // our username (= connection ID)

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = kind || "idle";
}

function errorText(err) {
  if (err instanceof Error) return err.message;
  if (typeof err === "string") return err;
  return "cannot reach the server";
}

function append(li) {
  $("messages").append(li);
  li.scrollIntoView({ block: "end" });
}

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

// `where`: "#room", "everyone", "private" (received) or "private to bob" (sent).
function showChat(from, where, text, mine) {
  const li = document.createElement("li");
  li.className = "chat";
  if (mine) li.classList.add("mine");
  if (where.startsWith("private")) li.classList.add("private");
  li.dataset.from = from;
  li.append(span("where", where));
  const name = span("from", from);
  if (!mine) name.title = `click to write to ${from} privately`;
  li.append(name);
  li.append(span("text", text));
  append(li);
}

// The server's Ask and our answer, one line.
function showQuestion(question, answer) {
  const li = document.createElement("li");
  li.className = "question";
  li.append(span("asked", `the server asks: ${question}`));
  li.append(span("answer", `answered: ${answer}`));
  append(li);
}

function showNotice(text) {
  const li = document.createElement("li");
  li.className = "notice";
  li.textContent = text;
  append(li);
}

function showError(text) {
  const li = document.createElement("li");
  li.className = "error";
  li.textContent = text;
  append(li);
}

function showRoom() {
  const el = $("current-room");
  if (room) {
    el.textContent = `in room ${room}`;
    el.className = "in";
  } else {
    el.textContent = "not in a room: messages go to everyone";
    el.className = "muted";
  }
  $("leave").disabled = !room;
}

// One clickable name per user (a click starts a private message); `title` = its instance.
function showPeople(el, users) {
  el.replaceChildren(
    ...users.map((u) => {
      const name = span(u.id === me ? "person me" : "person", u.id);
      name.dataset.user = u.id;
      name.title = u.instance ? `on ${u.instance}` : "";
      return name;
    }),
  );
  if (users.length === 0) el.textContent = "nobody";
}

async function fetchPeople(query) {
  const res = await fetch(`/online${query}`);
  if (!res.ok) throw new Error(`/online answered ${res.status}`);
  return (await res.json()).users;
}

let refreshing = false;
let refreshAgain = false;
// Re-reads who is online (and in our room); a call made during a refresh runs once more
// after it, so the last change is always shown.
async function refreshPeople() {
  if (!nsConn) return;
  if (refreshing) {
    refreshAgain = true;
    return;
  }
  refreshing = true;
  try {
    do {
      refreshAgain = false;
      showPeople($("online"), await fetchPeople(""));
      $("room-people").hidden = !room;
      if (room) {
        $("room-name").textContent = room;
        showPeople($("room-members"), await fetchPeople(`?room=${encodeURIComponent(room)}`));
      }
    } while (refreshAgain);
  } catch (e) {
    console.warn(`who is online: ${errorText(e)}`);
  } finally {
    refreshing = false;
  }
}
setInterval(refreshPeople, 10_000);

// `@bob hi` -> { to: "bob", text: "hi" }; anything else is not private.
function privateTo(text) {
  const m = /^@(\S+)\s+(\S[\s\S]*)$/.exec(text);
  return m ? { to: m[1], text: m[2] } : null;
}

// Handlers must not return a value: neffos.js would send it back as an error.
function guarded(fn) {
  return (ns, msg) => {
    try {
      fn(ns, msg);
    } catch (e) {
      console.error(e);
    }
  };
}

const handlers = {
  [NAMESPACE]: {
    [neffos.OnNamespaceConnected]: guarded((ns) => {
      nsConn = ns;
      me = ns.conn.ID;
      setStatus(`connected as ${me}`, "ok");
      refreshPeople();
    }),
    [neffos.OnNamespaceDisconnect]: guarded((ns, msg) => {
      if (ns === nsConn) {
        setStatus(msg.IsForced ? "connection lost, retrying…" : "disconnected", "error");
      }
    }),
    [neffos.OnRoomJoined]: guarded((ns, msg) => {
      room = msg.Room;
      showRoom();
      showNotice(`you joined ${msg.Room}`);
      refreshPeople();
    }),
    [neffos.OnRoomLeft]: guarded((ns, msg) => {
      if (room === msg.Room) room = null;
      showRoom();
      if (!msg.IsForced) showNotice(`you left ${msg.Room}`);
      refreshPeople();
    }),
    chat: guarded((ns, msg) => {
      if (msg.isError) {
        showError(`not sent: ${errorText(msg.Err)}`);
        return;
      }
      const m = msg.unmarshal();
      showChat(m.from, m.room ? `#${m.room}` : "everyone", m.text, false);
    }),
    private: guarded((ns, msg) => {
      if (msg.isError) {
        showError(`not sent: ${errorText(msg.Err)}`);
        return;
      }
      const m = msg.unmarshal();
      showChat(m.from, "private", m.text, false);
    }),
    // The server's Ask: the returned neffos.reply(...) is sent back as the answer.
    question: (ns, msg) => {
      const question = String(msg.Body ?? "");
      const answer = `${me} read "${question}" on ${$("instance").textContent}`;
      try {
        showQuestion(question, answer);
      } catch (e) {
        console.error(e);
      }
      return neffos.reply(answer);
    },
    notice: guarded((ns, msg) => {
      showNotice(msg.unmarshal().text);
      refreshPeople();
    }),
  },
};

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("username").value.trim();
  if (!name) return;
  $("connect").disabled = true;
  setStatus("connecting…");
  try {
    const conn = await neffos.dial("/echo", handlers, {
      // The per-tab session key: after a dropped connection the server gives the rooms and
      // the missed messages back (connection-state recovery).
      headers: { "X-Username": name, "X-Neffos-Session": sessionKey() },
      reconnect: 3000,
    });
    await conn.connect(NAMESPACE);
    $("login-form").hidden = true;
    $("chat").hidden = false;
    $("room").focus();
  } catch (err) {
    setStatus(`refused: ${errorText(err)}`, "error");
    $("connect").disabled = false;
  }
});

$("room-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("room").value.trim();
  if (!name || !nsConn || name === room) return;
  try {
    if (room) {
      const err = await nsConn.room(room)?.leave();
      if (err) throw err;
    }
    await nsConn.joinRoom(name);
    $("text").focus();
  } catch (err) {
    showError(`cannot join ${name}: ${errorText(err)}`);
  }
});

$("leave").addEventListener("click", async () => {
  const current = room && nsConn && nsConn.room(room);
  if (!current) return;
  const err = await current.leave();
  if (err) showError(`cannot leave ${current.name}: ${errorText(err)}`);
});

$("send-form").addEventListener("submit", (e) => {
  e.preventDefault();
  const text = $("text").value.trim();
  if (!text || !nsConn) return;
  const direct = privateTo(text);
  let sent;
  if (direct) {
    sent = nsConn.emit("private", JSON.stringify(direct));
    if (sent) showChat(me, `private to ${direct.to}`, direct.text, true);
  } else {
    const target = room ? nsConn.room(room) : nsConn;
    sent = target && target.emit("chat", text);
    if (sent) showChat(me, room ? `#${room}` : "everyone", text, true);
  }
  if (sent) {
    $("text").value = "";
  } else {
    showError("not sent: the connection is closed");
  }
});

// A click on someone's name (in a message or in the online lists) starts a private message.
function writeTo(name) {
  $("text").value = `@${name} `;
  $("text").focus();
}
$("messages").addEventListener("click", (e) => {
  const name = e.target.closest("li.chat:not(.mine) .from");
  if (name) writeTo(name.textContent);
});
$("people").addEventListener("click", (e) => {
  const person = e.target.closest(".person:not(.me)");
  if (person) writeTo(person.dataset.user);
});
