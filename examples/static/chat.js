// The chat page: neffos.js (served by the example at /neffos.js) in the browser.
//
// Username -> dial("/echo", ..., { headers: { "X-Username": name } }); in browsers neffos.js
// sends headers as `X-Websocket-Header-*` query parameters and the server uses the name as
// the connection ID. Then: connect namespace "default", join/leave rooms, emit "chat".
import neffos from "/neffos.js";

const NAMESPACE = "default";
const $ = (id) => document.getElementById(id);

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

function showChat(from, inRoom, text, mine) {
  const li = document.createElement("li");
  li.className = mine ? "chat mine" : "chat";
  li.dataset.from = from;
  li.append(span("where", inRoom ? `#${inRoom}` : "everyone"));
  li.append(span("from", from));
  li.append(span("text", text));
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
    }),
    [neffos.OnRoomLeft]: guarded((ns, msg) => {
      if (room === msg.Room) room = null;
      showRoom();
      if (!msg.IsForced) showNotice(`you left ${msg.Room}`);
    }),
    chat: guarded((ns, msg) => {
      if (msg.isError) {
        showError(`not sent: ${errorText(msg.Err)}`);
        return;
      }
      const m = msg.unmarshal();
      showChat(m.from, m.room, m.text, false);
    }),
    notice: guarded((ns, msg) => {
      showNotice(msg.unmarshal().text);
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
      headers: { "X-Username": name },
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
  const target = room ? nsConn.room(room) : nsConn;
  if (target && target.emit("chat", text)) {
    showChat(me, room, text, true);
    $("text").value = "";
  } else {
    showError("not sent: the connection is closed");
  }
});
