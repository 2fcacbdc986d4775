// Command server is a Go neffos (github.com/kataras/neffos v0.0.25) server used by the
// interop tests of neffos-rs (crates/core/tests/interop_go.rs).
//
// It listens on -addr (by default a free loopback port), serves the neffos endpoint at
// /echo with the gorilla upgrader, prints {"event":"listening","addr":"host:port"} and then
// one JSON object per line for everything it observes (connections, namespace and room
// changes, events, the results of the asks it makes). Some events make it act, so that a
// client can drive the server-initiated parts of the protocol:
//
//	chat             emit "chat-back" with the same body (text)
//	bin              emit "bin-back" with the same body (binary frame)
//	echo             reply with the same body
//	fail             reply with the error "go says no; exact text"
//	room-broadcast   broadcast "room-msg" to the room named by the body, then "marker" to the namespace
//	force-join       join the client to the room named by the body (server-side JoinRoom)
//	force-leave      leave the room named by the body (server-side Room.Leave)
//	force-connect    connect the client to the namespace named by the body (Conn.Connect)
//	force-disconnect disconnect the namespace named by the body (NSConn.Disconnect)
//	ask-me           Server.Ask the client "question" (in a goroutine, result printed as server_ask)
//	ask-me-fail      Server.Ask the client "question-fail" (result printed as server_ask)
//	conn-ask-me      NSConn.Ask the client "question" from inside the handler, reply with the result
//	close-me         terminate the connection with close code 4001 "go kicked"
//
// With -mode native the server has only namespace "" with only _OnNativeMessage (neffos
// native-only mode): every frame is printed and echoed back raw, with its frame type.
//
// The process exits when its standard input is closed or after -lifetime.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/kataras/neffos"
	"github.com/kataras/neffos/gorilla"
)

var (
	addr         = flag.String("addr", "127.0.0.1:0", "listen address")
	mode         = flag.String("mode", "normal", "normal | native")
	requireToken = flag.Bool("require-token", false, "refuse connections without an X-Token header")
	forceConnect = flag.String("force-connect", "", "namespace that OnConnect connects every client to")
	ping         = flag.Duration("ping", 0, "heartbeat ping interval (0: no pings)")
	timeout      = flag.Duration("timeout", 5*time.Second, "deadline of the asks this server makes")
	lifetime     = flag.Duration("lifetime", 3*time.Minute, "exit after this long")
)

// observation is one line of output.
type observation struct {
	Event  string `json:"event"`
	ID     string `json:"id,omitempty"`
	NS     string `json:"ns,omitempty"`
	Room   string `json:"room,omitempty"`
	Body   string `json:"body,omitempty"`
	Hex    string `json:"hex,omitempty"`
	Binary bool   `json:"binary,omitempty"`
	Local  bool   `json:"local,omitempty"`
	Forced bool   `json:"forced,omitempty"`
	Native bool   `json:"native,omitempty"`
	Err    string `json:"err,omitempty"`
	Code   int    `json:"code,omitempty"`
	Reason string `json:"reason,omitempty"`
	Addr   string `json:"addr,omitempty"`
}

var outMu sync.Mutex

func report(o observation) {
	line, err := json.Marshal(o)
	if err != nil {
		line = []byte(fmt.Sprintf(`{"event":"internal_error","err":%q}`, err.Error()))
	}

	outMu.Lock()
	os.Stdout.Write(append(line, '\n'))
	outMu.Unlock()
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// observe prints an incoming (or local system) message.
func observe(ns *neffos.NSConn, msg neffos.Message) error {
	report(observation{
		Event:  msg.Event,
		ID:     ns.Conn.ID(),
		NS:     msg.Namespace,
		Room:   msg.Room,
		Body:   string(msg.Body),
		Hex:    hex.EncodeToString(msg.Body),
		Binary: msg.SetBinary,
		Local:  msg.IsLocal,
		Forced: msg.IsForced,
		Native: msg.IsNative,
		Err:    errText(msg.Err),
	})
	return nil
}

func deadline() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), *timeout)
}

// serverAsk asks the connection "id" through Server.Ask and prints the outcome.
func serverAsk(server *neffos.Server, id, event string, body []byte) {
	ctx, cancel := deadline()
	defer cancel()

	reply, err := server.Ask(ctx, neffos.Message{Namespace: "default", Event: event, Body: body, To: id})
	report(observation{Event: "server_ask", ID: id, NS: "default", Body: string(reply.Body), Err: errText(err)})
}

func defaultEvents() neffos.Events {
	return neffos.Events{
		neffos.OnNamespaceConnected:  observe,
		neffos.OnNamespaceDisconnect: observe,
		neffos.OnRoomJoined:          observe,
		neffos.OnRoomLeft:            observe,
		"room-chat":                  observe,
		"chat": func(ns *neffos.NSConn, msg neffos.Message) error {
			observe(ns, msg)
			ns.Emit("chat-back", msg.Body)
			return nil
		},
		"bin": func(ns *neffos.NSConn, msg neffos.Message) error {
			observe(ns, msg)
			ns.EmitBinary("bin-back", msg.Body)
			return nil
		},
		"echo": func(_ *neffos.NSConn, msg neffos.Message) error {
			return neffos.Reply(msg.Body)
		},
		"fail": func(*neffos.NSConn, neffos.Message) error {
			return errors.New("go says no; exact text")
		},
		"room-broadcast": func(ns *neffos.NSConn, msg neffos.Message) error {
			room := string(msg.Body)
			server := ns.Conn.Server()
			server.Broadcast(nil, neffos.Message{Namespace: "default", Room: room, Event: "room-msg", Body: []byte("hello " + room)})
			server.Broadcast(nil, neffos.Message{Namespace: "default", Event: "marker", Body: msg.Body})
			return neffos.Reply([]byte("ok"))
		},
		"force-join": func(ns *neffos.NSConn, msg neffos.Message) error {
			ctx, cancel := deadline()
			defer cancel()
			if _, err := ns.JoinRoom(ctx, string(msg.Body)); err != nil {
				return err
			}
			return neffos.Reply([]byte("ok"))
		},
		"force-leave": func(ns *neffos.NSConn, msg neffos.Message) error {
			room := ns.Room(string(msg.Body))
			if room == nil {
				return neffos.ErrBadRoom
			}
			ctx, cancel := deadline()
			defer cancel()
			if err := room.Leave(ctx); err != nil {
				return err
			}
			return neffos.Reply([]byte("ok"))
		},
		"force-connect": func(ns *neffos.NSConn, msg neffos.Message) error {
			ctx, cancel := deadline()
			defer cancel()
			if _, err := ns.Conn.Connect(ctx, string(msg.Body)); err != nil {
				return err
			}
			return neffos.Reply([]byte("ok"))
		},
		"force-disconnect": func(ns *neffos.NSConn, msg neffos.Message) error {
			target := ns.Conn.Namespace(string(msg.Body))
			if target == nil {
				return neffos.ErrBadNamespace
			}
			ctx, cancel := deadline()
			defer cancel()
			if err := target.Disconnect(ctx); err != nil {
				return err
			}
			return neffos.Reply([]byte("ok"))
		},
		// Server.Ask waits for a reply that this connection's reader delivers, so it
		// cannot run inside this connection's handler.
		"ask-me": func(ns *neffos.NSConn, msg neffos.Message) error {
			go serverAsk(ns.Conn.Server(), ns.Conn.ID(), "question", msg.Body)
			return nil
		},
		"ask-me-fail": func(ns *neffos.NSConn, msg neffos.Message) error {
			go serverAsk(ns.Conn.Server(), ns.Conn.ID(), "question-fail", msg.Body)
			return nil
		},
		"conn-ask-me": func(ns *neffos.NSConn, msg neffos.Message) error {
			ctx, cancel := deadline()
			defer cancel()
			reply, err := ns.Ask(ctx, "question", msg.Body)
			report(observation{Event: "conn_ask", ID: ns.Conn.ID(), NS: ns.String(), Body: string(reply.Body), Err: errText(err)})
			if err != nil {
				return neffos.Reply([]byte("error: " + err.Error()))
			}
			return neffos.Reply(append([]byte("client said: "), reply.Body...))
		},
		"close-me": func(ns *neffos.NSConn, _ neffos.Message) error {
			ns.Conn.Terminate(4001, "go kicked")
			return nil
		},
	}
}

func handler() neffos.ConnHandler {
	settings := neffos.WithTimeout{PingInterval: *ping}

	if *mode == "native" {
		settings.Events = neffos.Events{
			neffos.OnNativeMessage: func(ns *neffos.NSConn, msg neffos.Message) error {
				observe(ns, msg)
				ns.Conn.Write(neffos.Message{Body: msg.Body, IsNative: true, SetBinary: msg.SetBinary})
				return nil
			},
		}
		return settings
	}

	settings.Namespaces = neffos.Namespaces{
		"default": defaultEvents(),
		"forced": neffos.Events{
			neffos.OnNamespaceConnected:  observe,
			neffos.OnNamespaceDisconnect: observe,
		},
		"private": neffos.Events{
			neffos.OnNamespaceConnect: func(*neffos.NSConn, neffos.Message) error {
				return errors.New("private namespace; denied")
			},
		},
	}
	return settings
}

func main() {
	flag.Parse()

	if *mode != "normal" && *mode != "native" {
		fmt.Fprintf(os.Stderr, "unknown -mode %q\n", *mode)
		os.Exit(2)
	}

	time.AfterFunc(*lifetime, func() {
		fmt.Fprintln(os.Stderr, "lifetime over")
		os.Exit(3)
	})
	go func() {
		io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()

	server := neffos.New(gorilla.DefaultUpgrader, handler())
	server.OnConnect = func(c *neffos.Conn) error {
		report(observation{Event: "connect", ID: c.ID()})

		if *requireToken && c.Socket().Request().Header.Get("X-Token") == "" {
			return errors.New("not allowed: missing token")
		}

		if *forceConnect != "" {
			ctx, cancel := deadline()
			defer cancel()
			if _, err := c.Connect(ctx, *forceConnect); err != nil {
				report(observation{Event: "force_connect_failed", ID: c.ID(), Err: err.Error()})
				return err
			}
		}
		return nil
	}
	server.OnDisconnect = func(c *neffos.Conn) {
		err := c.Err()
		o := observation{Event: "disconnect", ID: c.ID(), Code: neffos.CloseStatus(err), Err: errText(err)}
		if ce, ok := errors.AsType[neffos.CloseError](err); ok {
			o.Reason = ce.Reason
		}
		report(o)
	}

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}

	mux := http.NewServeMux()
	mux.Handle("/echo", server)

	report(observation{Event: "listening", Addr: ln.Addr().String()})
	if err := http.Serve(ln, mux); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
