// An HTTP/1.1 server for the keep-alive capture test: each request spins the CPU for
// ?work= ms then waits ?d= ms before answering (stdlib only, built offline).
package main

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		q := r.URL.Query()
		work, _ := strconv.Atoi(q.Get("work"))
		d, _ := strconv.Atoi(q.Get("d"))
		x := 0
		for end := time.Now().Add(time.Duration(work) * time.Millisecond); time.Now().Before(end); {
			for i := 0; i < 1000; i++ {
				x += i * i
			}
		}
		time.Sleep(time.Duration(d) * time.Millisecond)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"ok\": true, \"path\": %q, \"x\": %d}", r.URL.Path, x%7)
	})
	if err := http.ListenAndServe("127.0.0.1:"+os.Args[1], nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
