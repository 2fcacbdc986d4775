// Command client runs one interop scenario with the Go neffos client
// (github.com/kataras/neffos v0.0.25) against a neffos server, for the interop tests of
// neffos-rs (crates/core/tests/interop_go.rs).
//
//	client -url ws://127.0.0.1:1234/echo -scenario ask
//
// It prints one JSON object per line on standard output: {"step":...} for each check that
// passed, with what it saw, and {"result":"pass"} at the end. On the first failed check it
// prints {"result":"fail","error":...} and exits with status 1.
//
// The scenarios expect the server of interop_go.rs, whose events behave like those of the
// Go server in ../server (see its list): it declares namespaces "default", "forced" and
// "private" (whose connect is refused), answers "echo" and "fail", echoes "chat" and "bin",
// and on request asks this client, joins it to rooms, connects and disconnects its
// namespaces and closes it (code 4000, reason "kicked"). The refused scenario expects a
// server that requires an X-Token header; native-neffos, native-raw and close-handshake
// expect a native-only server that echoes every frame.
package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	gorillaws "github.com/gorilla/websocket"
	"github.com/kataras/neffos"
	"github.com/kataras/neffos/gorilla"
)

var (
	url      = flag.String("url", "", "WebSocket URL of the neffos endpoint")
	scenario = flag.String("scenario", "", "scenario to run (see -list)")
	list     = flag.Bool("list", false, "print the scenario names and exit")
	timeout  = flag.Duration("timeout", 5*time.Second, "deadline of every single wait")
	ping     = flag.Duration("ping", 0, "heartbeat ping interval of the client (heartbeat scenario)")
	quiet    = flag.Duration("quiet", 0, "how long the heartbeat scenario stays silent")
	lifetime = flag.Duration("lifetime", 2*time.Minute, "give up after this long")
)

var scenarios = map[string]func(){
	"connect":         scenarioConnect,
	"server-forced":   scenarioServerForced,
	"emit":            scenarioEmit,
	"binary":          scenarioBinary,
	"rooms":           scenarioRooms,
	"ask":             scenarioAsk,
	"refused":         scenarioRefused,
	"close-client":    scenarioCloseClient,
	"close-server":    scenarioCloseServer,
	"native-neffos":   scenarioNativeNeffos,
	"native-raw":      scenarioNativeRaw,
	"heartbeat":       scenarioHeartbeat,
	"close-handshake": scenarioCloseHandshake,
	"early-frames":    scenarioEarlyFrames,
	"typed":           scenarioTyped,
}

// binaryPayload holds the bytes that must survive a binary round trip: NUL, the field
// separator, bytes that are not UTF-8, and a trailing separator.
var binaryPayload = []byte{0x00, 0x01, ';', 'x', 0xff, 0xfe, 0x00, ';', 0x80, ';'}

var outMu sync.Mutex

func printJSON(v map[string]any) {
	line, err := json.Marshal(v)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"result":"fail","error":%q}`, err.Error()))
	}

	outMu.Lock()
	os.Stdout.Write(append(line, '\n'))
	outMu.Unlock()
}

// step reports a passed check; kv are key/value pairs.
func step(name string, kv ...any) {
	line := map[string]any{"step": name}
	for i := 0; i+1 < len(kv); i += 2 {
		line[fmt.Sprint(kv[i])] = kv[i+1]
	}
	printJSON(line)
}

func fail(format string, args ...any) {
	printJSON(map[string]any{"result": "fail", "scenario": *scenario, "error": fmt.Sprintf(format, args...)})
	os.Exit(1)
}

func check(err error, what string) {
	if err != nil {
		fail("%s: %v", what, err)
	}
}

func ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), *timeout)
}

// inbox collects messages delivered to event handlers, in arrival order.
type inbox struct {
	name string
	ch   chan neffos.Message
}

func newInbox(name string) *inbox {
	return &inbox{name: name, ch: make(chan neffos.Message, 256)}
}

func (in *inbox) record(_ *neffos.NSConn, msg neffos.Message) error {
	msg.Body = bytes.Clone(msg.Body)
	in.ch <- msg
	return nil
}

// next returns the next message, failing after the timeout.
func (in *inbox) next(waitingFor string) neffos.Message {
	select {
	case msg := <-in.ch:
		return msg
	case <-time.After(*timeout):
		fail("%s: timed out waiting for %s", in.name, waitingFor)
		return neffos.Message{}
	}
}

// expect returns the next message and fails unless it is "event" in namespace "ns"
// (and room "room").
func (in *inbox) expect(ns, room, event string) neffos.Message {
	msg := in.next(event)
	if msg.Namespace != ns || msg.Room != room || msg.Event != event {
		fail("%s: expected %s in namespace %q room %q, got %s in namespace %q room %q (body %q)",
			in.name, event, ns, room, msg.Event, msg.Namespace, msg.Room, msg.Body)
	}
	return msg
}

// peer is one Go client with its inboxes: "events" gets the custom events the server
// sends, "system" the local system events (namespace and room changes).
type peer struct {
	client *neffos.Client
	events *inbox
	system *inbox
}

func clientNamespaces(events, system *inbox) neffos.Namespaces {
	systemEvents := func() neffos.Events {
		return neffos.Events{
			neffos.OnNamespaceConnected:  system.record,
			neffos.OnNamespaceDisconnect: system.record,
			neffos.OnRoomJoined:          system.record,
			neffos.OnRoomLeft:            system.record,
		}
	}

	def := systemEvents()
	for _, event := range []string{"chat-back", "bin-back", "room-msg", "marker", "typed-back"} {
		def[event] = events.record
	}
	def["question"] = func(_ *neffos.NSConn, msg neffos.Message) error {
		return neffos.Reply(append([]byte("answer to "), msg.Body...))
	}
	def["question-fail"] = func(*neffos.NSConn, neffos.Message) error {
		return errors.New("client says no; really")
	}

	return neffos.Namespaces{
		"default": def,
		"forced":  systemEvents(),
		"private": systemEvents(),
		// declared here only: the server does not know it.
		"nope": systemEvents(),
	}
}

func dialWith(name string, header http.Header, handler func(events, system *inbox) neffos.ConnHandler) (*peer, error) {
	events, system := newInbox(name+" events"), newInbox(name+" system events")
	c, cancel := ctx()
	defer cancel()

	client, err := neffos.Dial(c, gorilla.Dialer(gorillaws.DefaultDialer, header), *url, handler(events, system))
	if err != nil {
		return nil, err
	}
	return &peer{client: client, events: events, system: system}, nil
}

func dial(name string) *peer {
	p, err := dialWith(name, http.Header{}, func(events, system *inbox) neffos.ConnHandler {
		return clientNamespaces(events, system)
	})
	check(err, name+": dial")
	if p.client.ID == "" {
		fail("%s: the server assigned no connection ID", name)
	}
	step("dialed", "client", name, "id", p.client.ID)
	return p
}

func (p *peer) connect(ns string) *neffos.NSConn {
	c, cancel := ctx()
	defer cancel()

	conn, err := p.client.Connect(c, ns)
	check(err, "connect "+ns)
	if p.client.Conn().Namespace(ns) != conn {
		fail("connect %s: the namespace is not recorded as connected", ns)
	}
	sys := p.system.expect(ns, "", neffos.OnNamespaceConnected)
	if !sys.IsLocal {
		fail("connect %s: local %s should be IsLocal", ns, neffos.OnNamespaceConnected)
	}
	return conn
}

func ask(ns *neffos.NSConn, event string, body []byte) (neffos.Message, error) {
	c, cancel := ctx()
	defer cancel()
	return ns.Ask(c, event, body)
}

func askOK(ns *neffos.NSConn, event string, body []byte, want string) {
	reply, err := ask(ns, event, body)
	check(err, "ask "+event)
	if string(reply.Body) != want {
		fail("ask %s: got reply %q, want %q", event, reply.Body, want)
	}
	step("asked", "event", event, "reply", string(reply.Body))
}

// waitClosed waits until the client's connection is closed and returns its close error.
func waitClosed(p *peer) error {
	select {
	case <-p.client.NotifyClose:
		return p.client.Conn().Err()
	case <-time.After(*timeout):
		fail("the connection was not closed")
		return nil
	}
}

func scenarioConnect() {
	p := dial("a")
	ns := p.connect("default")
	step("connected", "ns", "default")

	// Connecting again is a no-op that returns the same namespace connection.
	c, cancel := ctx()
	again, err := p.client.Connect(c, "default")
	cancel()
	check(err, "connect default again")
	if again != ns {
		fail("a second connect returned another namespace connection")
	}

	c, cancel = ctx()
	_, err = p.client.Connect(c, "nope")
	cancel()
	if !errors.Is(err, neffos.ErrBadNamespace) {
		fail("connect to an undeclared namespace: got %v, want %v", err, neffos.ErrBadNamespace)
	}
	step("refused namespace", "ns", "nope", "error", err.Error())

	c, cancel = ctx()
	_, err = p.client.Connect(c, "private")
	cancel()
	if err == nil || err.Error() != "private namespace; denied" {
		fail("connect to a refusing namespace: got %v, want the server's reason", err)
	}
	if p.client.Conn().Namespace("private") != nil {
		fail("a refused namespace is recorded as connected")
	}
	step("refused namespace", "ns", "private", "error", err.Error())

	c, cancel = ctx()
	err = ns.Disconnect(c)
	cancel()
	check(err, "disconnect default")
	if p.client.Conn().Namespace("default") != nil {
		fail("default is still connected after Disconnect")
	}
	sys := p.system.expect("default", "", neffos.OnNamespaceDisconnect)
	if !sys.IsLocal || sys.IsForced {
		fail("local disconnect event: IsLocal=%v IsForced=%v", sys.IsLocal, sys.IsForced)
	}
	step("disconnected", "ns", "default")

	// Events of a disconnected namespace are not sent.
	if ns.Emit("chat", []byte("after disconnect")) {
		fail("emit on a disconnected namespace was written")
	}

	// Reconnecting works.
	p.connect("default")
	step("reconnected", "ns", "default")
	p.client.Close()
}

func scenarioServerForced() {
	p := dial("a")
	ns := p.connect("default")

	askOK(ns, "force-connect", []byte("forced"), "ok")
	c, cancel := ctx()
	forced, err := p.client.WaitServerConnect(c, "forced")
	cancel()
	check(err, "wait server connect")
	sys := p.system.expect("forced", "", neffos.OnNamespaceConnected)
	if sys.IsLocal {
		fail("a server-forced connect fired a local OnNamespaceConnected")
	}
	step("server connected", "ns", forced.String())

	askOK(ns, "force-disconnect", []byte("forced"), "ok")
	if p.client.Conn().Namespace("forced") != nil {
		fail("forced is still connected after the server disconnected it")
	}
	sys = p.system.expect("forced", "", neffos.OnNamespaceDisconnect)
	if sys.IsLocal {
		fail("a server-forced disconnect fired a local OnNamespaceDisconnect")
	}
	step("server disconnected", "ns", "forced")

	// The namespace can be connected again by the client itself.
	p.connect("forced")
	step("reconnected", "ns", "forced")
	p.client.Close()
}

func scenarioEmit() {
	p := dial("a")
	ns := p.connect("default")

	for _, body := range []string{"hello; world", "", "ünïcödé ✓", "a;b;c;d;e;f;g"} {
		if !ns.Emit("chat", []byte(body)) {
			fail("emit chat %q was not written", body)
		}
		got := p.events.expect("default", "", "chat-back")
		if string(got.Body) != body || got.SetBinary {
			fail("chat-back: got %q (binary %v), want %q as text", got.Body, got.SetBinary, body)
		}
		step("emitted", "event", "chat", "body", body)
	}
	p.client.Close()
}

func scenarioBinary() {
	p := dial("a")
	ns := p.connect("default")

	if !ns.EmitBinary("bin", binaryPayload) {
		fail("emit binary was not written")
	}
	got := p.events.expect("default", "", "bin-back")
	if !got.SetBinary || !bytes.Equal(got.Body, binaryPayload) {
		fail("bin-back: got %x (binary %v), want %x as binary", got.Body, got.SetBinary, binaryPayload)
	}
	step("binary round trip", "hex", hex.EncodeToString(got.Body))

	// A text message after the binary one stays text.
	ns.Emit("chat", []byte("text again"))
	got = p.events.expect("default", "", "chat-back")
	if got.SetBinary || string(got.Body) != "text again" {
		fail("chat-back after binary: got %q (binary %v)", got.Body, got.SetBinary)
	}
	step("text after binary")
	p.client.Close()
}

func scenarioRooms() {
	a, b := dial("a"), dial("b")
	nsA, nsB := a.connect("default"), b.connect("default")

	c, cancel := ctx()
	lobby, err := nsA.JoinRoom(c, "lobby")
	cancel()
	check(err, "join lobby")
	sys := a.system.expect("default", "lobby", neffos.OnRoomJoined)
	if !sys.IsLocal {
		fail("own join: OnRoomJoined should be IsLocal")
	}
	step("joined", "client", "a", "room", "lobby")

	if !lobby.Emit("room-chat", []byte("hi room")) {
		fail("room emit was not written")
	}
	step("room emitted", "client", "a", "room", "lobby")

	// The room broadcast reaches a (a member) before the namespace marker; b (not a
	// member) gets only the marker.
	askOK(nsA, "room-broadcast", []byte("lobby"), "ok")
	got := a.events.expect("default", "lobby", "room-msg")
	if string(got.Body) != "hello lobby" {
		fail("room-msg body %q", got.Body)
	}
	a.events.expect("default", "", "marker")
	b.events.expect("default", "", "marker")
	step("room broadcast", "member", "a", "outsider", "b")

	c, cancel = ctx()
	err = lobby.Leave(c)
	cancel()
	check(err, "leave lobby")
	if nsA.Room("lobby") != nil {
		fail("lobby still joined after Leave")
	}
	a.system.expect("default", "lobby", neffos.OnRoomLeft)
	step("left", "client", "a", "room", "lobby")

	askOK(nsB, "room-broadcast", []byte("lobby"), "ok")
	a.events.expect("default", "", "marker")
	b.events.expect("default", "", "marker")
	step("no room broadcast after leaving")

	// Server-forced join and leave.
	askOK(nsA, "force-join", []byte("vip"), "ok")
	if nsA.Room("vip") == nil {
		fail("vip not joined after the server's join")
	}
	sys = a.system.expect("default", "vip", neffos.OnRoomJoined)
	if sys.IsLocal {
		fail("a server-forced join fired a local OnRoomJoined")
	}
	step("server joined", "room", "vip")

	askOK(nsB, "room-broadcast", []byte("vip"), "ok")
	a.events.expect("default", "vip", "room-msg")
	a.events.expect("default", "", "marker")
	b.events.expect("default", "", "marker")
	step("room broadcast after server join")

	askOK(nsA, "force-leave", []byte("vip"), "ok")
	if nsA.Room("vip") != nil {
		fail("vip still joined after the server's leave")
	}
	a.system.expect("default", "vip", neffos.OnRoomLeft)
	step("server left", "room", "vip")

	a.client.Close()
	b.client.Close()
}

func scenarioAsk() {
	p := dial("a")
	ns := p.connect("default")

	askOK(ns, "echo", []byte("ping; 1"), "ping; 1")
	askOK(ns, "echo", nil, "")

	_, err := ask(ns, "fail", []byte("x"))
	if err == nil || err.Error() != "nope; exact text" {
		fail("ask fail: got %v, want the handler's error text", err)
	}
	step("error reply", "error", err.Error())

	// The server asks this client from inside its handler, then reports what it got.
	askOK(ns, "ask-me", []byte("life"), "client said: answer to life")
	askOK(ns, "conn-ask-me", []byte("everything"), "client said: answer to everything")
	askOK(ns, "ask-me-fail", []byte("x"), "error: client says no; really")

	// Concurrent asks are matched by token.
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for i := range 8 {
		wg.Go(func() {
			body := fmt.Sprintf("concurrent %d", i)
			reply, err := ask(ns, "echo", []byte(body))
			if err == nil && string(reply.Body) != body {
				err = fmt.Errorf("reply %q to %q", reply.Body, body)
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		check(err, "concurrent ask")
	}
	step("concurrent asks", "count", 8)
	p.client.Close()
}

// typedAdd and typedSum are the JSON bodies of the typed scenario (the Rust server decodes
// them with Json<T> handlers).
type typedAdd struct {
	A int `json:"a"`
	B int `json:"b"`
}

type typedSum struct {
	Sum  int    `json:"sum"`
	By   string `json:"by"`
	Call int    `json:"call"`
}

// scenarioTyped sends neffos.Marshal bodies to typed Rust handlers and Unmarshals their
// replies; a body that does not decode gets an error naming the event, and the connection
// stays usable.
func scenarioTyped() {
	p := dial("a")
	ns := p.connect("default")

	body, err := neffos.Marshal(typedAdd{A: 2, B: 40})
	check(err, "marshal")
	reply, err := ask(ns, "add", body)
	check(err, "ask add")
	var sum typedSum
	check(reply.Unmarshal(&sum), "unmarshal the reply")
	if sum.Sum != 42 || sum.By != "rust" || sum.Call != 1 {
		fail("ask add: got %+v, want sum 42 by rust, call 1", sum)
	}
	step("typed reply", "sum", sum.Sum, "by", sum.By)

	_, err = ask(ns, "add", []byte(`{"a":1}`))
	want := `the JSON body of "add" on namespace "default": cannot be decoded: missing field ` + "`b`"
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		fail("ask add with a bad body: got %v, want an error starting with %q", err, want)
	}
	step("rejected", "error", err.Error())

	// The connection stays: a typed emit is answered with a typed emit.
	body, err = neffos.Marshal(typedAdd{A: 20, B: 3})
	check(err, "marshal")
	if !ns.Emit("typed-chat", body) {
		fail("emit typed-chat: not written")
	}
	back := p.events.expect("default", "", "typed-back")
	var echoed typedSum
	check(back.Unmarshal(&echoed), "unmarshal typed-back")
	if echoed.Sum != 23 || echoed.By != "rust" {
		fail("typed-back: got %+v, want sum 23 by rust", echoed)
	}
	step("typed emit", "sum", echoed.Sum)
	p.client.Close()
}

func scenarioRefused() {
	_, err := dialWith("anonymous", http.Header{}, func(events, system *inbox) neffos.ConnHandler {
		return clientNamespaces(events, system)
	})
	if err == nil || err.Error() != "not allowed: missing token" {
		fail("dial without a token: got %v, want the OnConnect reason", err)
	}
	step("refused", "error", err.Error())

	p, err := dialWith("authorized", http.Header{"X-Token": {"secret"}}, func(events, system *inbox) neffos.ConnHandler {
		return clientNamespaces(events, system)
	})
	check(err, "dial with a token")
	step("dialed", "client", "authorized", "id", p.client.ID)
	ns := p.connect("default")
	askOK(ns, "echo", []byte("let in"), "let in")
	p.client.Close()
}

func scenarioCloseClient() {
	p := dial("a")
	ns := p.connect("default")
	c, cancel := ctx()
	_, err := ns.JoinRoom(c, "lobby")
	cancel()
	check(err, "join lobby")
	p.system.expect("default", "lobby", neffos.OnRoomJoined)

	p.client.Close()
	err = waitClosed(p)
	if neffos.CloseStatus(err) != neffos.CloseNormalClosure {
		fail("close error %v, want code %d", err, neffos.CloseNormalClosure)
	}

	// Closing leaves rooms and namespaces locally, forced.
	for _, event := range []string{neffos.OnRoomLeft, neffos.OnNamespaceDisconnect} {
		room := ""
		if event == neffos.OnRoomLeft {
			room = "lobby"
		}
		msg := p.system.expect("default", room, event)
		if !msg.IsForced || !msg.IsLocal {
			fail("%s on close: IsForced=%v IsLocal=%v", event, msg.IsForced, msg.IsLocal)
		}
	}
	if ns.Emit("chat", []byte("after close")) {
		fail("emit after close was written")
	}
	step("closed by the client")
}

func scenarioCloseServer() {
	p := dial("a")
	ns := p.connect("default")
	ns.Emit("close-me", nil)

	err := waitClosed(p)
	var ce neffos.CloseError
	if !errors.As(err, &ce) || ce.Code != 4000 || ce.Reason != "kicked" {
		fail("close error %#v, want code 4000 reason \"kicked\"", err)
	}
	msg := p.system.expect("default", "", neffos.OnNamespaceDisconnect)
	if !msg.IsForced {
		fail("OnNamespaceDisconnect on remote close should be IsForced")
	}
	step("closed by the server", "code", ce.Code, "reason", ce.Reason)
}

func scenarioNativeNeffos() {
	in := newInbox("native")
	c, cancel := ctx()
	client, err := neffos.Dial(c, gorilla.DefaultDialer, *url, neffos.Events{neffos.OnNativeMessage: in.record})
	cancel()
	check(err, "dial native")
	step("dialed native", "id", client.ID)

	conn := client.Conn()
	cases := []struct {
		body   []byte
		binary bool
	}{
		{[]byte("native;text;with;separators"), false},
		{binaryPayload, true},
		{[]byte("M"), false},
	}
	for _, tc := range cases {
		if !conn.Write(neffos.Message{Body: tc.body, IsNative: true, SetBinary: tc.binary}) {
			fail("native write %q was not written", tc.body)
		}
		got := in.next("the native echo")
		if !got.IsNative || got.Event != neffos.OnNativeMessage || got.SetBinary != tc.binary || !bytes.Equal(got.Body, tc.body) {
			fail("native echo: got %q (event %s, native %v, binary %v), want %q (binary %v)",
				got.Body, got.Event, got.IsNative, got.SetBinary, tc.body, tc.binary)
		}
		step("native round trip", "hex", hex.EncodeToString(tc.body), "binary", tc.binary)
	}
	client.Close()
}

func scenarioNativeRaw() {
	ws, _, err := gorillaws.DefaultDialer.Dial(*url, nil)
	check(err, "dial raw")
	defer ws.Close()

	cases := []struct {
		typ  int
		body []byte
	}{
		{gorillaws.TextMessage, []byte("hello;raw;world")},
		{gorillaws.BinaryMessage, binaryPayload},
		{gorillaws.TextMessage, []byte("M")},
	}
	for _, tc := range cases {
		check(ws.WriteMessage(tc.typ, tc.body), "raw write")
		check(ws.SetReadDeadline(time.Now().Add(*timeout)), "deadline")
		typ, body, err := ws.ReadMessage()
		check(err, "raw read")
		if typ != tc.typ || !bytes.Equal(body, tc.body) {
			fail("raw echo: got type %d %q, want type %d %q", typ, body, tc.typ, tc.body)
		}
		step("raw round trip", "hex", hex.EncodeToString(tc.body), "type", typ)
	}

	// Close like the Go neffos client does: a close frame, then the TCP connection.
	check(ws.WriteMessage(gorillaws.CloseMessage, gorillaws.FormatCloseMessage(gorillaws.CloseNormalClosure, "")), "write close")
	step("raw closed")
}

// scenarioCloseHandshake sends a close frame and expects the server's close frame in
// answer (RFC 6455 §5.5.1), as browsers do: without it they report 1006.
func scenarioCloseHandshake() {
	ws, _, err := gorillaws.DefaultDialer.Dial(*url, nil)
	check(err, "dial raw")
	defer ws.Close()

	check(ws.WriteMessage(gorillaws.CloseMessage, gorillaws.FormatCloseMessage(gorillaws.CloseNormalClosure, "bye")), "write close")
	check(ws.SetReadDeadline(time.Now().Add(*timeout)), "deadline")
	_, _, err = ws.ReadMessage()
	var ce *gorillaws.CloseError
	if !errors.As(err, &ce) || ce.Code != gorillaws.CloseNormalClosure {
		fail("after our close frame: got %v, want the server's close frame 1000", err)
	}
	step("close answered", "code", ce.Code, "reason", ce.Text)
}

func scenarioHeartbeat() {
	p, err := dialWith("a", http.Header{}, func(events, system *inbox) neffos.ConnHandler {
		return neffos.WithTimeout{PingInterval: *ping, Namespaces: clientNamespaces(events, system)}
	})
	check(err, "dial")
	ns := p.connect("default")

	// Stay silent: only pings and pongs cross the connection meanwhile.
	select {
	case <-p.client.NotifyClose:
		fail("closed while silent: %v", p.client.Conn().Err())
	case <-time.After(*quiet):
	}
	askOK(ns, "echo", []byte("still here"), "still here")
	step("alive after silence", "quiet", quiet.String(), "ping", ping.String())
	p.client.Close()
}

// scenarioEarlyFrames writes a neffos frame right after the WebSocket handshake, before
// the acknowledgement request, as neffos.js may. The server must keep it and handle it
// once acknowledged; "A<id>" must still be the very first frame it sends (PROTOCOL.md §1.5).
func scenarioEarlyFrames() {
	ws, _, err := gorillaws.DefaultDialer.Dial(*url, nil)
	check(err, "dial raw")
	defer ws.Close()

	check(ws.WriteMessage(gorillaws.TextMessage, []byte("$early-1;default;;_OnNamespaceConnect;0;0;")), "write early connect")
	check(ws.WriteMessage(gorillaws.TextMessage, []byte("M")), "write ack request")

	var frames []string
	for len(frames) < 2 {
		check(ws.SetReadDeadline(time.Now().Add(*timeout)), "deadline")
		typ, body, err := ws.ReadMessage()
		check(err, "read")
		if typ != gorillaws.TextMessage {
			fail("frame %q is not a text frame", body)
		}
		frames = append(frames, string(body))
	}
	if len(frames[0]) < 2 || frames[0][0] != 'A' || frames[1] != "$early-1;;;;;;" {
		fail("frames %q: want A<id>, then the empty reply to the early connect", frames)
	}
	step("early frame answered after the ack", "frames", frames)
}

func main() {
	flag.Parse()

	if *list {
		names := make([]string, 0, len(scenarios))
		for name := range scenarios {
			names = append(names, name)
		}
		sort.Strings(names)
		for _, name := range names {
			fmt.Println(name)
		}
		return
	}

	run, ok := scenarios[*scenario]
	if !ok {
		fail("unknown scenario %q", *scenario)
	}
	if *url == "" {
		fail("-url is required")
	}

	time.AfterFunc(*lifetime, func() { fail("scenario still running after %s", *lifetime) })
	run()
	printJSON(map[string]any{"result": "pass", "scenario": *scenario})
}
