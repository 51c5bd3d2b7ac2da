package daemon

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/raftcast/raftcast/internal/api"
)

// usageError marks a bad request: a client that gets it exits 2.
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// handlerFunc is an API handler: it returns the JSON document to send, or an error.
type handlerFunc func(r *http.Request) (any, error)

// auth wraps h with the bearer-token check and panic safety: a bad request never stops the
// daemon.
func (d *Daemon) auth(h http.HandlerFunc) http.HandlerFunc {
	want := []byte("Bearer " + d.token)
	return func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			writeJSON(w, http.StatusUnauthorized, api.Error{Error: "missing or wrong API token (read it from the data dir's api.token)"})
			return
		}
		defer func() {
			if v := recover(); v != nil {
				d.log.Error("API handler panicked", "path", r.URL.Path, "panic", v)
				writeJSON(w, http.StatusInternalServerError, api.Error{Error: fmt.Sprintf("internal error: %v", v)})
			}
		}()
		h(w, r)
	}
}

// json adapts a handlerFunc to http.
func (d *Daemon) json(h handlerFunc) http.HandlerFunc {
	return d.auth(func(w http.ResponseWriter, r *http.Request) {
		out, err := h(r)
		if err != nil {
			if isUsage(err) {
				writeJSON(w, http.StatusBadRequest, api.Error{Error: err.Error(), Usage: true})
				return
			}
			writeJSON(w, http.StatusUnprocessableEntity, api.Error{Error: err.Error()})
			return
		}
		writeJSON(w, http.StatusOK, out)
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

// decodeBody reads a JSON request body of at most 1 MiB into v.
func decodeBody(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return usagef("malformed request body: %v", err)
	}
	return nil
}

// isUsage reports whether err is the client's mistake.
func isUsage(err error) bool {
	var ue usageError
	return errors.As(err, &ue)
}

// timeoutOr turns a request's timeout in seconds into a duration, def when it is not set.
func timeoutOr(seconds float64, def time.Duration) time.Duration {
	if seconds > 0 {
		return time.Duration(seconds * float64(time.Second))
	}
	return def
}

// checkOut checks a streaming request's --out path before the stream starts: absolute, in a
// directory that exists. It answers the request itself and returns false when the path is bad.
func checkOut(w http.ResponseWriter, out string) bool {
	if out == "" || !filepath.IsAbs(out) {
		writeJSON(w, http.StatusBadRequest, api.Error{Error: "an absolute --out path is required", Usage: true})
		return false
	}
	if _, err := os.Stat(filepath.Dir(out)); err != nil {
		writeJSON(w, http.StatusUnprocessableEntity, api.Error{Error: "--out: " + err.Error()})
		return false
	}
	return true
}
