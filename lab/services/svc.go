// The lab's configurable service, Go flavour: HTTP routes made of steps (calls to other
// services, SQL through database/sql's pool, Redis commands, queue pushes, CPU work), queue
// consumers and the fault switch. Config: JSON file at $LAB_CONFIG (lab/topologies/mesh.py).
// Stdlib plus lib/pq (Debian's golang-github-lib-pq-dev), built offline in GOPATH mode.
package main

import (
	"bufio"
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"math/rand"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	_ "github.com/lib/pq"
)

type Step map[string]interface{}

type Config struct {
	Name     string                       `json:"name"`
	Port     int                          `json:"port"`
	Peers    map[string]string            `json:"peers"`
	Routes   map[string][]Step            `json:"routes"`
	Consume  map[string][]Step            `json:"consume"`
	PG       string                       `json:"pg"`
	DB       string                       `json:"db"`
	Redis    string                       `json:"redis"`
	Control  string                       `json:"control"`
	Pool     int                          `json:"pool"`
}

var (
	cfg    Config
	db     *sql.DB
	client = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 32}}
	fmu    sync.Mutex
	fault  map[string]interface{}
	fat    time.Time
)

type stepErr struct {
	status int
	msg    string
}

func (e *stepErr) Error() string { return e.msg }

func currentFault(route string) map[string]interface{} {
	fmu.Lock()
	if time.Since(fat) > 250*time.Millisecond {
		fat = time.Now()
		fault = nil
		if b, err := os.ReadFile(filepath.Join(cfg.Control, cfg.Name)); err == nil && len(bytes.TrimSpace(b)) > 0 {
			_ = json.Unmarshal(b, &fault)
		}
	}
	f := fault
	fmu.Unlock()
	if f == nil {
		return nil
	}
	r, _ := f["route"].(string)
	p, ok := f["p"].(float64)
	if !ok {
		p = 1
	}
	if (r == route || r == "*") && rand.Float64() < p {
		return f
	}
	return nil
}

func num(s Step, k string, def float64) float64 {
	if v, ok := s[k].(float64); ok {
		return v
	}
	return def
}

// ---- Redis: a small RESP client, one connection per call site from a free list ----

var redisFree = make(chan *bufio.ReadWriter, 64)

func redisCmd(args ...string) (string, error) {
	var rw *bufio.ReadWriter
	select {
	case rw = <-redisFree:
	default:
		c, err := net.DialTimeout("tcp", cfg.Redis, 2*time.Second)
		if err != nil {
			return "", err
		}
		rw = bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	}
	fmt.Fprintf(rw, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(rw, "$%d\r\n%s\r\n", len(a), a)
	}
	if err := rw.Flush(); err != nil {
		return "", err
	}
	out, err := readReply(rw.Reader)
	if err == nil {
		redisFree <- rw
	}
	return out, err
}

func readReply(r *bufio.Reader) (string, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	line = strings.TrimRight(line, "\r\n")
	switch line[0] {
	case '+', ':':
		return line[1:], nil
	case '-':
		return "", fmt.Errorf("redis: %s", line[1:])
	case '$':
		n, _ := strconv.Atoi(line[1:])
		if n < 0 {
			return "", nil
		}
		buf := make([]byte, n+2)
		_, err := io.ReadFull(r, buf)
		return string(buf[:n]), err
	case '*':
		n, _ := strconv.Atoi(line[1:])
		last := ""
		for i := 0; i < n; i++ {
			if last, err = readReply(r); err != nil {
				return "", err
			}
		}
		return last, nil
	}
	return "", fmt.Errorf("redis: bad reply %q", line)
}

// ---- steps ----

func call(s Step) (float64, error) {
	peer, _ := s["call"].(string)
	route, _ := s["route"].(string)
	parts := strings.SplitN(route, " ", 2)
	tries := 1 + int(num(s, "retries", 0))
	timeout := time.Duration(num(s, "timeout", 2.0) * float64(time.Second))
	last := ""
	for i := 0; i < tries; i++ {
		var body io.Reader
		if parts[0] == "POST" {
			body = strings.NewReader("{}")
		}
		req, _ := http.NewRequest(parts[0], "http://"+cfg.Peers[peer]+parts[1], body)
		if body != nil {
			req.Header.Set("Content-Type", "application/json")
		}
		c := *client
		c.Timeout = timeout
		resp, err := c.Do(req)
		if err != nil {
			last = peer + ": " + err.Error()
			continue
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 500 {
			last = fmt.Sprintf("%s answered %d", peer, resp.StatusCode)
			continue
		}
		var ans map[string]interface{}
		_ = json.Unmarshal(data, &ans)
		v, ok := ans["value"].(float64)
		if !ok {
			return 0, &stepErr{500, fmt.Sprintf("bad value from %s: %v", peer, ans["value"])}
		}
		return v, nil
	}
	return 0, &stepErr{502, last}
}

func strs(v interface{}) []string {
	var out []string
	for _, x := range v.([]interface{}) {
		out = append(out, strings.ReplaceAll(x.(string), "$R", strconv.Itoa(1+rand.Intn(500))))
	}
	return out
}

func work(ms float64) {
	end := time.Now().Add(time.Duration(ms * float64(time.Millisecond)))
	x := 0
	for time.Now().Before(end) {
		for i := 0; i < 2000; i++ {
			x += i * i
		}
	}
	_ = x
}

func runSteps(steps []Step, f map[string]interface{}) (float64, error) {
	total := 0.0
	for _, s := range steps {
		switch {
		case s["call"] != nil:
			v, err := call(s)
			if err != nil {
				return 0, err
			}
			total += v
		case s["par"] != nil:
			subs := s["par"].([]interface{})
			vals := make([]float64, len(subs))
			errs := make([]error, len(subs))
			var wg sync.WaitGroup
			for i, x := range subs {
				wg.Add(1)
				go func(i int, st Step) {
					defer wg.Done()
					vals[i], errs[i] = call(st)
				}(i, Step(x.(map[string]interface{})))
			}
			wg.Wait()
			for i := range subs {
				if errs[i] != nil {
					return 0, errs[i]
				}
				total += vals[i]
			}
		case s["sql"] != nil:
			q := strings.ReplaceAll(s["sql"].(string), "$R", strconv.Itoa(1+rand.Intn(20000)))
			rows, err := db.Query(q)
			if err != nil {
				return 0, &stepErr{500, "database: " + err.Error()}
			}
			for rows.Next() {
				total++
			}
			rows.Close()
		case s["redis"] != nil:
			if _, err := redisCmd(strs(s["redis"])...); err != nil {
				return 0, &stepErr{500, err.Error()}
			}
			total++
		case s["push"] != nil:
			if _, err := redisCmd("LPUSH", s["push"].(string), fmt.Sprintf(`{"from":"%s"}`, cfg.Name)); err != nil {
				return 0, &stepErr{500, err.Error()}
			}
		case s["work"] != nil:
			work(num(s, "work", 1))
		case s["sleep"] != nil:
			time.Sleep(time.Duration(num(s, "sleep", 1) * (0.7 + 0.6*rand.Float64()) * float64(time.Millisecond)))
		}
	}
	return total, nil
}

func reply(w http.ResponseWriter, status int, body map[string]interface{}) {
	data, _ := json.Marshal(body)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(data)
}

func handler(w http.ResponseWriter, r *http.Request) {
	io.Copy(io.Discard, r.Body)
	if r.URL.Path == "/healthz" {
		reply(w, 200, map[string]interface{}{"ok": true, "value": 1})
		return
	}
	route := r.Method + " " + r.URL.Path
	steps, ok := cfg.Routes[route]
	if !ok {
		reply(w, 404, map[string]interface{}{"ok": false, "error": "no such route"})
		return
	}
	f := currentFault(route)
	mode, _ := f["mode"].(string)
	if mode == "slow" {
		time.Sleep(time.Duration(num(Step(f), "ms", 500)) * time.Millisecond)
	}
	if mode == "error" {
		reply(w, 500, map[string]interface{}{"ok": false, "error": "panic in " + route})
		return
	}
	v, err := runSteps(steps, f)
	if err != nil {
		se, _ := err.(*stepErr)
		reply(w, se.status, map[string]interface{}{"ok": false, "error": se.msg})
		return
	}
	if mode == "wrong" {
		reply(w, 200, map[string]interface{}{"ok": true, "value": nil})
		return
	}
	reply(w, 200, map[string]interface{}{"ok": true, "value": v})
}

func consume(queue string, steps []Step) {
	c, err := net.Dial("tcp", cfg.Redis)
	if err != nil {
		log.Fatal(err)
	}
	rw := bufio.NewReadWriter(bufio.NewReader(c), bufio.NewWriter(c))
	for {
		fmt.Fprintf(rw, "*3\r\n$5\r\nBRPOP\r\n$%d\r\n%s\r\n$1\r\n1\r\n", len(queue), queue)
		rw.Flush()
		item, err := readReply(rw.Reader)
		if err != nil {
			log.Fatal(err)
		}
		if item != "" {
			if _, err := runSteps(steps, currentFault("consume "+queue)); err != nil {
				log.Printf("%s: job failed: %v", cfg.Name, err)
			}
		}
	}
}

func main() {
	b, err := os.ReadFile(os.Getenv("LAB_CONFIG"))
	if err != nil {
		log.Fatal(err)
	}
	if err := json.Unmarshal(b, &cfg); err != nil {
		log.Fatal(err)
	}
	if cfg.PG != "" {
		hp := strings.SplitN(cfg.PG, ":", 2)
		db, err = sql.Open("postgres", fmt.Sprintf("host=%s port=%s user=postgres dbname=%s sslmode=disable connect_timeout=3", hp[0], hp[1], cfg.DB))
		if err != nil {
			log.Fatal(err)
		}
		pool := cfg.Pool
		if pool == 0 {
			pool = 4
		}
		db.SetMaxOpenConns(pool)
		db.SetMaxIdleConns(pool)
	}
	for q, steps := range cfg.Consume {
		go consume(q, steps)
	}
	if cfg.Port == 0 {
		log.Printf("%s consuming", cfg.Name)
		select {}
	}
	addr := fmt.Sprintf("127.0.0.1:%d", cfg.Port)
	log.Printf("%s listening on %d", cfg.Name, cfg.Port)
	log.Fatal(http.ListenAndServe(addr, http.HandlerFunc(handler)))
}
