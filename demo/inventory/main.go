// Inventory service (Go, HTTPS): the product catalogue and stock reservations, in PostgreSQL.
//
// Fault modes (read from $SHOP_CONTROL/inventory): "bad-cert" serves a certificate no
// client trusts (tls-failure); "leak" forgets to end transactions, exhausting the DB
// connection pool (pool-exhaustion).
package main

import (
	"context"
	"crypto/tls"
	"database/sql"
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/lib/pq"
)

const poolSize = 8

var (
	db     *sql.DB
	mode   atomic.Value // current fault mode, "" when healthy
	leakMu sync.Mutex
	leaked []*sql.Conn
)

type product struct {
	ID         int    `json:"id"`
	SKU        string `json:"sku"`
	Name       string `json:"name"`
	PriceCents int    `json:"price_cents"`
	Stock      int    `json:"stock"`
}

// The glibc resolver can't take a port, so lookups go to the shop's DNS server explicitly.
func useShopDNS(addr string) {
	net.DefaultResolver = &net.Resolver{
		PreferGo: true,
		Dial: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
}

func watchFaults(path string, srv *http.Server) {
	for range time.Tick(250 * time.Millisecond) {
		b, _ := os.ReadFile(path)
		m := strings.TrimSpace(string(b))
		old := mode.Load().(string)
		if m != "leak" && old == "leak" {
			releaseLeaked()
		}
		// A new certificate only shows on new connections: drop the kept-alive ones.
		if (m == "bad-cert") != (old == "bad-cert") {
			srv.SetKeepAlivesEnabled(m != "bad-cert")
		}
		mode.Store(m)
	}
}

// leakOne is the bug the pool-exhaustion fault switches on: a transaction begun on an
// error path and never committed or rolled back holds its connection forever.
func leakOne() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	conn, err := db.Conn(ctx) // waits for a free connection at most 2 s
	if err != nil {
		return
	}
	if mode.Load().(string) != "leak" {
		conn.Close()
		return
	}
	if _, err := conn.ExecContext(context.Background(), "BEGIN"); err != nil {
		conn.Close()
		return
	}
	leakMu.Lock()
	leaked = append(leaked, conn)
	leakMu.Unlock()
}

func releaseLeaked() {
	leakMu.Lock()
	defer leakMu.Unlock()
	for _, c := range leaked {
		c.ExecContext(context.Background(), "ROLLBACK")
		c.Close()
	}
	leaked = nil
}

func fail(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// failWithReason answers with a specific reason phrase in the status line (net/http
// always writes the standard one), as proxies and servers do to say why they refuse.
func failWithReason(w http.ResponseWriter, code int, reason, body string) {
	conn, buf, err := w.(http.Hijacker).Hijack()
	if err != nil {
		fail(w, code, reason)
		return
	}
	defer conn.Close()
	fmt.Fprintf(buf, "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s",
		code, reason, len(body), body)
	buf.Flush()
}

func reply(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// dbError says whether a failed query was the pool running dry or the database itself.
func dbError(w http.ResponseWriter, ctx context.Context, err error) {
	if s := db.Stats(); s.InUse >= poolSize && ctx.Err() == context.DeadlineExceeded {
		body := fmt.Sprintf(`{"error":"db connection pool exhausted (%d/%d in use, %d waits)"}`, s.InUse, poolSize, s.WaitCount)
		failWithReason(w, 503, "DB Connection Pool Exhausted", body)
		return
	}
	fail(w, 500, "database error: "+err.Error())
}

func products(w http.ResponseWriter, r *http.Request) {
	if mode.Load().(string) == "leak" {
		go leakOne()
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	sku := strings.TrimPrefix(r.URL.Path, "/products")
	sku = strings.TrimPrefix(sku, "/")
	const cols = "SELECT id, sku, name, price_cents, stock FROM products "
	if sku != "" {
		var p product
		err := db.QueryRowContext(ctx, cols+"WHERE sku = $1", sku).Scan(&p.ID, &p.SKU, &p.Name, &p.PriceCents, &p.Stock)
		if err == sql.ErrNoRows {
			fail(w, 404, "no such product")
		} else if err != nil {
			dbError(w, ctx, err)
		} else {
			reply(w, p)
		}
		return
	}
	limit, _ := strconv.Atoi(r.URL.Query().Get("limit"))
	if limit <= 0 || limit > 100 {
		limit = 20
	}
	rows, err := db.QueryContext(ctx, cols+"ORDER BY id LIMIT $1", limit)
	if err != nil {
		dbError(w, ctx, err)
		return
	}
	defer rows.Close()
	out := []product{}
	for rows.Next() {
		var p product
		rows.Scan(&p.ID, &p.SKU, &p.Name, &p.PriceCents, &p.Stock)
		out = append(out, p)
	}
	reply(w, out)
}

func reserve(w http.ResponseWriter, r *http.Request) {
	if mode.Load().(string) == "leak" {
		go leakOne()
	}
	var req struct {
		SKU      string `json:"sku"`
		Quantity int    `json:"quantity"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || req.Quantity <= 0 {
		fail(w, 400, "bad reservation")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var price int
	err := db.QueryRowContext(ctx, "UPDATE products SET stock = stock - $2 WHERE sku = $1 AND stock >= $2 RETURNING price_cents",
		req.SKU, req.Quantity).Scan(&price)
	if err == sql.ErrNoRows {
		fail(w, 409, "out of stock")
		return
	} else if err != nil {
		dbError(w, ctx, err)
		return
	}
	reply(w, map[string]any{"sku": req.SKU, "quantity": req.Quantity, "price_cents": price})
}

func main() {
	useShopDNS(os.Getenv("SHOP_DNS"))
	pgHost, pgPort, _ := net.SplitHostPort(os.Getenv("SHOP_POSTGRES"))
	var err error
	db, err = sql.Open("postgres", fmt.Sprintf("host=%s port=%s user=postgres dbname=shop sslmode=disable connect_timeout=3", pgHost, pgPort))
	if err != nil {
		log.Fatal(err)
	}
	db.SetMaxOpenConns(poolSize)
	db.SetMaxIdleConns(poolSize)

	good, err := tls.LoadX509KeyPair(os.Getenv("SHOP_CERT"), os.Getenv("SHOP_KEY"))
	if err != nil {
		log.Fatal(err)
	}
	bad, err := tls.LoadX509KeyPair(os.Getenv("SHOP_BAD_CERT"), os.Getenv("SHOP_BAD_KEY"))
	if err != nil {
		log.Fatal(err)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { reply(w, map[string]bool{"ok": true}) })
	mux.HandleFunc("/products", products)
	mux.HandleFunc("/products/", products)
	mux.HandleFunc("/reserve", reserve)
	srv := &http.Server{
		Addr:    "127.0.0.1:" + os.Getenv("SHOP_PORT"),
		Handler: mux,
		TLSConfig: &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			if mode.Load().(string) == "bad-cert" {
				return &bad, nil
			}
			return &good, nil
		}},
		ErrorLog: log.New(os.Stderr, "", 0),
	}
	mode.Store("")
	go watchFaults(filepath.Join(os.Getenv("SHOP_CONTROL"), "inventory"), srv)
	log.Printf("inventory listening on %s", srv.Addr)
	log.Fatal(srv.ListenAndServeTLS("", ""))
}
