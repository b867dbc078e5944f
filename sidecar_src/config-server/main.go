// Command config-server is the sidecar of the Sidecar Lab tutorial.
//
// It behaves like the config-server of Cloud Foundry's capi-sidecar-samples: it
// listens on $CONFIG_SERVER_PORT and hands every request under /config/ the
// same (fake) credentials, so the app beside it in the container has something
// to fetch over localhost.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// config is what the sidecar serves. Field order is the JSON order learners see.
type config struct {
	Scope    string
	Password string
}

var served = config{Scope: "some-service.admin", Password: "not-a-real-p4$$w0rd"}

// lockedWriter serialises writes so that log lines from concurrent requests
// never interleave, whatever the underlying writer is.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// newHandler answers every path under /config/ with the config and logs each request to log.
func newHandler(log io.Writer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/config/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(log, "Received a request for config.")
		w.Header().Set("Content-Type", "application/json")
		// Encode writes the trailing newline that curl users expect.
		if err := json.NewEncoder(w).Encode(served); err != nil {
			fmt.Fprintf(log, "could not write the response: %v\n", err)
		}
	})
	return mux
}

// run serves until ctx is done and returns the process exit code.
func run(ctx context.Context, getenv func(string) string, stdout, stderr io.Writer) int {
	port := getenv("CONFIG_SERVER_PORT")
	if port == "" {
		fmt.Fprintln(stderr, "Error: missing $CONFIG_SERVER_PORT")
		return 1
	}
	// "tcp" (not "tcp4") so that localhost works whether it resolves to 127.0.0.1 or ::1.
	ln, err := net.Listen("tcp", "0.0.0.0:"+port)
	if err != nil {
		fmt.Fprintf(stderr, "Error: cannot listen on $CONFIG_SERVER_PORT=%q: %v\n", port, err)
		return 1
	}
	out := &lockedWriter{w: stdout}
	// Report the bound port, which differs from $CONFIG_SERVER_PORT when that is 0.
	fmt.Fprintf(out, "listening 0.0.0.0:%d...\n", ln.Addr().(*net.TCPAddr).Port)

	srv := &http.Server{Handler: newHandler(out), ReadHeaderTimeout: 10 * time.Second}
	stopped := make(chan error, 1)
	go func() { stopped <- srv.Serve(ln) }()

	select {
	case err := <-stopped:
		fmt.Fprintf(stderr, "Error: server stopped: %v\n", err)
		return 1
	case <-ctx.Done():
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := srv.Shutdown(shutdownCtx); err != nil && !errors.Is(err, context.DeadlineExceeded) {
			fmt.Fprintf(stderr, "Error: shutting down: %v\n", err)
			return 1
		}
		return 0
	}
}

func main() {
	// A graceful stop on SIGTERM, which is how Cloud Foundry asks processes to stop.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Getenv, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
