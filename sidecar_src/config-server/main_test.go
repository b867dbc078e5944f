package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

const wantBody = `{"Scope":"some-service.admin","Password":"not-a-real-p4$$w0rd"}` + "\n"

func envWith(values map[string]string) func(string) string {
	return func(key string) string { return values[key] }
}

func TestConfigHandlerAnswersEveryPathUnderConfig(t *testing.T) {
	for _, path := range []string{"/config/", "/config/anything", "/config/a/b?x=1"} {
		var log bytes.Buffer
		rec := httptest.NewRecorder()
		newHandler(&log).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))

		if rec.Code != http.StatusOK {
			t.Errorf("GET %s: status %d, want 200", path, rec.Code)
		}
		if got := rec.Header().Get("Content-Type"); got != "application/json" {
			t.Errorf("GET %s: Content-Type %q, want application/json", path, got)
		}
		if got := rec.Body.String(); got != wantBody {
			t.Errorf("GET %s: body %q, want %q", path, got, wantBody)
		}
		if got := log.String(); got != "Received a request for config.\n" {
			t.Errorf("GET %s: log %q, want one request line", path, got)
		}
	}
}

func TestOtherPathsAreNotFound(t *testing.T) {
	var log bytes.Buffer
	rec := httptest.NewRecorder()
	newHandler(&log).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/secrets", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /secrets: status %d, want 404", rec.Code)
	}
	if log.Len() != 0 {
		t.Errorf("GET /secrets logged %q, want nothing", log.String())
	}
}

func TestRunWithoutPortFails(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), envWith(nil), &stdout, &stderr)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if got := stderr.String(); got != "Error: missing $CONFIG_SERVER_PORT\n" {
		t.Errorf("stderr %q", got)
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout %q, want nothing", stdout.String())
	}
}

func TestRunWithBadPortFails(t *testing.T) {
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), envWith(map[string]string{"CONFIG_SERVER_PORT": "not-a-port"}), &stdout, &stderr)
	if code != 1 {
		t.Errorf("exit code %d, want 1", code)
	}
	if got := stderr.String(); !strings.Contains(got, `$CONFIG_SERVER_PORT="not-a-port"`) {
		t.Errorf("stderr %q does not name the bad value", got)
	}
}

func TestRunListensAndServes(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	outR, outW := io.Pipe()
	var stderr bytes.Buffer
	exited := make(chan int, 1)
	go func() {
		// Port 0: the kernel picks a free port, which the listening line reports.
		exited <- run(ctx, envWith(map[string]string{"CONFIG_SERVER_PORT": "0"}), outW, &stderr)
		outW.Close()
	}()

	lines := bufio.NewScanner(outR)
	if !lines.Scan() {
		t.Fatalf("no listening line; stderr %q", stderr.String())
	}
	first := lines.Text()
	var port int
	if _, err := fmt.Sscanf(first, "listening 0.0.0.0:%d...", &port); err != nil || port == 0 {
		t.Fatalf("listening line %q does not match \"listening 0.0.0.0:<port>...\"", first)
	}
	// Keep draining stdout so request log lines never block the server.
	logged := make(chan string, 16)
	go func() {
		for lines.Scan() {
			logged <- lines.Text()
		}
		close(logged)
	}()

	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get("http://127.0.0.1:" + strconv.Itoa(port) + "/config/")
	if err != nil {
		t.Fatalf("GET /config/: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != wantBody {
		t.Errorf("body %q, want %q", body, wantBody)
	}
	if got := <-logged; got != "Received a request for config." {
		t.Errorf("request log line %q", got)
	}

	cancel()
	if code := <-exited; code != 0 {
		t.Errorf("exit code after shutdown %d, want 0; stderr %q", code, stderr.String())
	}
}
