// TLS dialer for Guardian's live handshake tests: crypto/tls only (builds offline), so the
// client side of a handshake is Go's (TLS 1.3 alerts encrypted, unlike OpenSSL's).
//
//	tlsdial -addr 127.0.0.1:8443 -max 1.3 [-ca ca.pem] [-n 3]
//
// Each of the n connections handshakes (verifying the server against -ca, or the system
// roots), then sends one HTTP/1.1 request and reads the answer. Exit 1 if any failed.
package main

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"flag"
	"fmt"
	"os"
	"strings"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8443", "server address")
	max := flag.String("max", "1.3", "highest TLS version: 1.2 or 1.3")
	ca := flag.String("ca", "", "CA certificate PEM to trust (default: system roots)")
	n := flag.Int("n", 1, "connections")
	flag.Parse()
	cfg := &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	if *max == "1.2" {
		cfg.MaxVersion = tls.VersionTLS12
	}
	if *ca != "" {
		pem, err := os.ReadFile(*ca)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		cfg.RootCAs = x509.NewCertPool()
		cfg.RootCAs.AppendCertsFromPEM(pem)
	}
	failed := 0
	for i := 0; i < *n; i++ {
		conn, err := tls.Dial("tcp", *addr, cfg)
		if err != nil {
			fmt.Println("handshake:", err)
			failed++
			continue
		}
		fmt.Fprintf(conn, "GET /tlsdial/%d HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", i)
		status, err := bufio.NewReader(conn).ReadString('\n')
		if err != nil || !strings.HasPrefix(status, "HTTP/1.1 ") {
			fmt.Println("request:", err)
			failed++
		} else {
			fmt.Print("status: ", status)
		}
		conn.Close()
	}
	if failed > 0 {
		os.Exit(1)
	}
}
