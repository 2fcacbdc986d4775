// Command gochat is the chat of the neffos-rs examples (examples/src/chat.rs) written with
// Go neffos (github.com/kataras/neffos v0.0.25) and its own StackExchanges: the Go side of
// the rolling-migration tests of the Go compatibility mode (examples/tests/gocompat.rs).
//
// It serves the neffos endpoint at /echo (gorilla upgrader), namespace "default":
//
//	ID          the X-Username header (neffos.js sends it as X-Websocket-Header-X-Username);
//	            a connection without one is refused
//	chat        {"from","room","text"} to the other members of the message's room, or of
//	            the namespace outside rooms (Server.Broadcast excluding the sender)
//	private     body {"to","text"}: {"from","room":null,"text"} to the connection(s) with
//	            ID "to" (Message.To)
//	GET /ask?to=<id>&question=<text>
//	            Server.Ask of connection "to", event "question"; answers with the reply
//	            (200), the error (502) or "no reply" after 5 s (504)
//
// -exchange redis|nats joins processes through neffos's own stackexchange/redis (channel
// prefix -prefix) or stackexchange/nats (SubjectPrefix -prefix).
//
// It prints {"event":"listening","addr":"host:port"} once listening and exits when its
// standard input is closed or after -lifetime.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/kataras/neffos"
	"github.com/kataras/neffos/gorilla"
	"github.com/kataras/neffos/stackexchange/nats"
	"github.com/kataras/neffos/stackexchange/redis"
)

var (
	addr      = flag.String("addr", "127.0.0.1:0", "listen address")
	lifetime  = flag.Duration("lifetime", 5*time.Minute, "exit after this long")
	exchange  = flag.String("exchange", "redis", "the StackExchange: redis or nats")
	redisAddr = flag.String("redis-addr", "127.0.0.1:6379", "redis address (host:port)")
	natsURL   = flag.String("nats-url", "nats://127.0.0.1:4222", "nats URL")
	prefix    = flag.String("prefix", "neffos", "redis channel prefix / nats subject prefix")
)

const namespace = "default"

type chatBody struct {
	From string  `json:"from"`
	Room *string `json:"room"`
	Text string  `json:"text"`
}

type privateBody struct {
	To   string `json:"to"`
	Text string `json:"text"`
}

func stackExchange() (neffos.StackExchange, error) {
	switch *exchange {
	case "redis":
		return redis.NewStackExchange(redis.Config{Addr: *redisAddr}, *prefix)
	case "nats":
		exc, err := nats.NewStackExchange(*natsURL)
		if err != nil {
			return nil, err
		}
		exc.SubjectPrefix = *prefix
		return exc, nil
	default:
		return nil, fmt.Errorf("unknown -exchange %q (redis or nats)", *exchange)
	}
}

func events() neffos.Namespaces {
	return neffos.Namespaces{
		namespace: neffos.Events{
			"chat": func(ns *neffos.NSConn, msg neffos.Message) error {
				text := strings.TrimSpace(string(msg.Body))
				if text == "" {
					return nil
				}
				var room *string
				if msg.Room != "" {
					room = &msg.Room
				}
				body, err := json.Marshal(chatBody{From: ns.Conn.ID(), Room: room, Text: text})
				if err != nil {
					return err
				}
				ns.Conn.Server().Broadcast(ns, neffos.Message{
					Namespace: namespace,
					Room:      msg.Room,
					Event:     "chat",
					Body:      body,
				})
				return nil
			},
			"private": func(ns *neffos.NSConn, msg neffos.Message) error {
				var p privateBody
				if err := json.Unmarshal(msg.Body, &p); err != nil || p.To == "" {
					return errors.New("private needs {\"to\", \"text\"}")
				}
				body, err := json.Marshal(chatBody{From: ns.Conn.ID(), Text: p.Text})
				if err != nil {
					return err
				}
				ns.Conn.Server().Broadcast(nil, neffos.Message{
					Namespace: namespace,
					Event:     "private",
					To:        p.To,
					Body:      body,
				})
				return nil
			},
		},
	}
}

func main() {
	flag.Parse()

	server := neffos.New(gorilla.DefaultUpgrader, events())
	server.IDGenerator = func(_ http.ResponseWriter, r *http.Request) string {
		return strings.TrimSpace(r.Header.Get("X-Username"))
	}
	server.OnConnect = func(c *neffos.Conn) error {
		if c.ID() == "" {
			return errors.New("choose a username first (header X-Username)")
		}
		return nil
	}
	exc, err := stackExchange()
	if err != nil {
		fmt.Fprintln(os.Stderr, "exchange:", err)
		os.Exit(1)
	}
	if err := server.UseStackExchange(exc); err != nil {
		fmt.Fprintln(os.Stderr, "exchange:", err)
		os.Exit(1)
	}

	listener, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "listen:", err)
		os.Exit(1)
	}
	fmt.Printf("{\"event\":\"listening\",\"addr\":%q}\n", listener.Addr().String())

	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		os.Exit(0)
	}()
	go func() {
		time.Sleep(*lifetime)
		os.Exit(0)
	}()

	mux := http.NewServeMux()
	mux.Handle("/echo", server)
	mux.HandleFunc("/ask", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		reply, err := server.Ask(ctx, neffos.Message{
			Namespace: namespace,
			Event:     "question",
			To:        r.URL.Query().Get("to"),
			Body:      []byte(r.URL.Query().Get("question")),
		})
		switch {
		case errors.Is(err, context.DeadlineExceeded):
			http.Error(w, "no reply", http.StatusGatewayTimeout)
		case err != nil:
			http.Error(w, err.Error(), http.StatusBadGateway)
		default:
			_, _ = w.Write(reply.Body)
		}
	})
	if err := http.Serve(listener, mux); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
