// Command raftcast is the raftcast node daemon, rendezvous node and client (see CLI.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	logging "github.com/ipfs/go-log/v2"

	"github.com/raftcast/raftcast/internal/api"
)

func main() {
	if os.Getenv("GOLOG_LOG_LEVEL") == "" {
		// go-libp2p-raft's transport logs every stream cut by a shutdown at ERROR through
		// go-log; raftcast reports Raft's state through its own logs instead.
		_ = logging.SetLogLevel("raftlib", "fatal")
	}
	os.Exit(run(os.Args[1:]))
}

// run executes one command line and returns the process exit status: 0 done, 1 the operation
// failed, 2 usage error.
func run(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRoot()
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	fmt.Fprintln(os.Stderr, "raftcast: "+oneLine(err.Error()))
	if isUsage(err) {
		return 2
	}
	return 1
}

// usageError marks a command-line mistake (exit 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func isUsage(err error) bool {
	var ue usageError
	if errors.As(err, &ue) {
		return true
	}
	var re *api.RequestError
	if errors.As(err, &re) {
		return re.Usage
	}
	// cobra's own errors for unknown commands and bad arguments.
	s := err.Error()
	return strings.HasPrefix(s, "unknown command") || strings.HasPrefix(s, "unknown flag") ||
		strings.HasPrefix(s, "unknown shorthand flag") || strings.Contains(s, "accepts ") ||
		strings.HasPrefix(s, "requires at least") || strings.HasPrefix(s, "invalid argument")
}

func oneLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}
