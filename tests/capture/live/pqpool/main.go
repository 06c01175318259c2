// A Go service's PostgreSQL traffic as the fault lab's Go services make it (lab/services/svc.go):
// database/sql's pool over lib/pq, shared by goroutines (so a connection's query is written by
// one OS thread and its answer read by another), simple queries (no arguments) and extended ones
// (arguments: Parse/Describe/Sync, then Bind/Execute/Sync), rows read with rows.Next, and idle
// waits between uses. Prints one JSON line per query: its tag and how long the client waited.
//
//	pqpool DSN WORKERS QUERIES IDLE_MS
package main

import (
	"database/sql"
	"encoding/json"
	"fmt"
	"math/rand"
	"os"
	"strconv"
	"sync"
	"time"

	_ "github.com/lib/pq"
)

type result struct {
	Tag  string `json:"tag"`
	Rows int    `json:"rows"`
	Ns   int64  `json:"ns"`
}

func main() {
	workers, _ := strconv.Atoi(os.Args[2])
	queries, _ := strconv.Atoi(os.Args[3])
	idle, _ := strconv.Atoi(os.Args[4])
	db, err := sql.Open("postgres", os.Args[1])
	if err != nil {
		panic(err)
	}
	db.SetMaxOpenConns(2) // fewer connections than workers: each is handed from goroutine to goroutine
	db.SetMaxIdleConns(2)
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := json.NewEncoder(os.Stdout)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(int64(w)))
			for i := 0; i < queries; i++ {
				n := 1 + rng.Intn(40)
				tag := fmt.Sprintf("q%d_%d", w, i)
				t0 := time.Now()
				var rows *sql.Rows
				if i%2 == 0 {
					rows, err = db.Query(fmt.Sprintf("SELECT g FROM generate_series(1, %d) g /* %s */", n, tag))
				} else {
					rows, err = db.Query(fmt.Sprintf("SELECT g FROM generate_series(1, $1::int) g /* %s */", tag), n)
				}
				if err != nil {
					panic(err)
				}
				got := 0
				for rows.Next() {
					got++
				}
				if err := rows.Close(); err != nil {
					panic(err)
				}
				ns := time.Since(t0).Nanoseconds()
				if got != n {
					panic(fmt.Sprintf("%s: %d rows, want %d", tag, got, n))
				}
				mu.Lock()
				out.Encode(result{tag, got, ns})
				mu.Unlock()
				time.Sleep(time.Duration(rng.Intn(idle+1)) * time.Millisecond)
			}
		}(w)
	}
	wg.Wait()
}
