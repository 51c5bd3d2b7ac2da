package pipes_test

import (
	"syscall"

	"golang.org/x/sys/unix"
)

func reuseAddr(_, _ string, c syscall.RawConn) error {
	var serr error
	err := c.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEADDR, 1) })
	if err != nil {
		return err
	}
	return serr
}
