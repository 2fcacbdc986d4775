// Command benchserver is the Go neffos (github.com/kataras/neffos v0.0.25) peer of the
// neffos-rs benchmark (`cargo xtask bench`, benches/src/suite).
//
// It serves the neffos endpoint at /echo with the gorilla upgrader and the same behaviour
// as the Rust bench server (neffos-bench-server):
//
//	namespace "bench"
//	  fanout   broadcast "msg" with the same body to every other connection of the
//	           namespace (the message's room empty) or of the message's room
//	  ask      reply with the same body
//
// It prints {"event":"listening","addr":"host:port"} once listening and exits when its
// standard input is closed or after -lifetime. Only the "none" exchange is available: the
// Redis and NATS StackExchanges of neffos need modules that interop/go/go.mod does not list.
package main

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/kataras/neffos"
	"github.com/kataras/neffos/gorilla"
)

var (
	addr     = flag.String("addr", "127.0.0.1:0", "listen address")
	lifetime = flag.Duration("lifetime", 10*time.Minute, "exit after this long")
)

func events() neffos.Namespaces {
	return neffos.Namespaces{
		"bench": neffos.Events{
			"fanout": func(ns *neffos.NSConn, msg neffos.Message) error {
				ns.Conn.Server().Broadcast(ns.Conn, neffos.Message{
					Namespace: "bench",
					Room:      msg.Room,
					Event:     "msg",
					Body:      msg.Body,
				})
				return nil
			},
			"ask": func(_ *neffos.NSConn, msg neffos.Message) error {
				return neffos.Reply(msg.Body)
			},
		},
	}
}

func main() {
	flag.Parse()

	server := neffos.New(gorilla.DefaultUpgrader, events())
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
	// Go's net/http sets TCP_NODELAY on accepted connections by default.
	if err := http.Serve(listener, mux); err != nil {
		fmt.Fprintln(os.Stderr, "serve:", err)
		os.Exit(1)
	}
}
