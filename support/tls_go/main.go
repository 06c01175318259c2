// TLS target for Guardian's live tests: an HTTPS server or client on crypto/tls
// (standard library only, so it builds offline).
//
//	tlstarget server -addr 127.0.0.1:8443 -cert c.pem -key k.pem
//	tlstarget client -url https://127.0.0.1:8443/x -n 5
package main

import (
	"bufio"
	"crypto/tls"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: tlstarget server|client [flags]")
		os.Exit(2)
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	addr := fs.String("addr", "127.0.0.1:8443", "listen address (server)")
	cert := fs.String("cert", "", "certificate PEM (server)")
	key := fs.String("key", "", "key PEM (server)")
	url := fs.String("url", "", "URL to GET (client)")
	n := fs.Int("n", 1, "requests on one keep-alive connection (client)")
	hold := fs.Bool("wait-stdin", false, "start the requests once a line arrives on stdin (client)")
	every := fs.Duration("every", 0, "pause between requests (client)")
	numbered := fs.Bool("numbered", false, "append -<i> to the URL of request i (client)")
	fs.Parse(os.Args[2:])
	switch os.Args[1] {
	case "server":
		http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			if r.URL.Path == "/missing" {
				w.WriteHeader(http.StatusNotFound)
			}
			fmt.Fprintf(w, "go tls %s\n", r.URL.Path)
		})
		srv := &http.Server{Addr: *addr, TLSNextProto: map[string]func(*http.Server, *tls.Conn, http.Handler){}}
		fmt.Println("listening")
		if err := srv.ListenAndServeTLS(*cert, *key); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	case "client":
		tr := &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, ForceAttemptHTTP2: false,
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		c := &http.Client{Transport: tr}
		if *hold { // lets a test start the process, see it probed, then let it talk
			bufio.NewReader(os.Stdin).ReadString('\n')
		}
		for i := 0; i < *n; i++ {
			if i > 0 {
				time.Sleep(*every)
			}
			u := *url
			if *numbered {
				u = fmt.Sprintf("%s-%d", u, i)
			}
			resp, err := c.Get(u)
			if err != nil {
				fmt.Fprintln(os.Stderr, err)
				os.Exit(1)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			fmt.Println(resp.StatusCode)
		}
	default:
		fmt.Fprintln(os.Stderr, "unknown mode", os.Args[1])
		os.Exit(2)
	}
}
