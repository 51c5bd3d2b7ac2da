// Command rcnet is the testnet's probe: ICMP echo and native UDP multicast
// send/receive, each printing one JSON document on stdout; an HTTP origin with a
// per-client-IP cap and a one-connection fetch (cooperative-download scenarios,
// also on remote hosts); and a pipe listener that shows each message's carrier. It
// runs inside the network namespaces that testnet/lib.sh builds (so it needs no
// ping, socat, curl, nginx or python on the machine) and measures multicast
// goodput on shaped links.
//
//	rcnet ping  -addr ADDR [-count N] [-replies N] [-timeout D]
//	rcnet mrecv -group G -port P -iface IF [-ready FILE] [-expect N] [-idle D] [-timeout D]
//	rcnet msend -group G -port P -iface IF (-count N | -bytes B) [-size S] [-rate R] [-ttl T]
//	rcnet serve -dir D [-addr A] [-ip-rate R] [-ready FILE] [-timeout D]   (http.go)
//	rcnet fetch -url U -out FILE [-timeout D]
//	rcnet pipelisten -data DIR -name N [-kind K] [-group G] [-ready FILE] [-timeout D]   (pipe.go)
//
// Multicast datagrams carry a 16-byte header (magic "RCMC", a 32-bit sender
// tag and a 64-bit sequence number); the receiver counts distinct sequence
// numbers per sender, ignores duplicates and foreign datagrams, and reports
// goodput as UDP payload bits between its first and last datagram. mrecv stops
// on SIGINT/SIGTERM, after -expect datagrams, after -idle without data once
// data has come, or at -timeout, and always prints its summary.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "ping":
		err = runPing(os.Args[2:])
	case "mrecv":
		err = runRecv(os.Args[2:])
	case "msend":
		err = runSend(os.Args[2:])
	case "serve":
		err = runServe(os.Args[2:])
	case "fetch":
		err = runFetch(os.Args[2:])
	case "pipelisten":
		err = runPipeListen(os.Args[2:])
	case "-h", "--help", "help":
		usage()
	default:
		fmt.Fprintf(os.Stderr, "rcnet: unknown command %q\n", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "rcnet %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  rcnet ping  -addr ADDR [-count N] [-replies N] [-timeout D]
  rcnet mrecv -group G -port P -iface IF [-ready FILE] [-expect N] [-idle D] [-timeout D]
  rcnet msend -group G -port P -iface IF (-count N | -bytes B) [-size S] [-rate R] [-ttl T]
  rcnet serve -dir D [-addr A] [-ip-rate R] [-ready FILE] [-timeout D]
  rcnet fetch -url U -out FILE [-timeout D]
  rcnet pipelisten -data DIR -name N [-kind K] [-group G] [-ready FILE] [-timeout D]`)
	os.Exit(2)
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	return enc.Encode(v)
}

// parseRate reads a rate in bits per second: "95mbit", "1gbit", "500kbit" or
// plain bits per second. Zero means unpaced.
func parseRate(s string) (float64, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	mult := 1.0
	for _, u := range []struct {
		suffix string
		mult   float64
	}{{"gbit", 1e9}, {"mbit", 1e6}, {"kbit", 1e3}, {"bit", 1}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad rate %q (want e.g. 95mbit)", s)
	}
	return v * mult, nil
}

// parseSize reads a byte count: "64MiB", "1GiB", "512KiB" or plain bytes.
func parseSize(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if strings.HasSuffix(s, u.suffix) {
			s, mult = strings.TrimSuffix(s, u.suffix), u.mult
			break
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v < 0 {
		return 0, fmt.Errorf("bad size %q (want e.g. 64MiB)", s)
	}
	return v * mult, nil
}
