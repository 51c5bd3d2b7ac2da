package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

// TestConfigPrecedence: a flag beats the environment, which beats config.toml, which beats
// the default.
func TestConfigPrecedence(t *testing.T) {
	dir := t.TempDir()
	conf := "name = \"from-file\"\nbootstrap = [\"/ip4/198.18.0.1/tcp/4001/p2p/x\"]\nmdns = false\napi = \"127.0.0.1:7000\"\n"
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	fc, err := loadFileConfig(dir)
	if err != nil {
		t.Fatal(err)
	}
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	name := fs.String("name", "", "")
	api := fs.String("api", "", "")
	mdns := fs.Bool("mdns", true, "")
	boot := fs.StringArray("bootstrap", nil, "")
	if err := fs.Parse([]string{"--name", "from-flag"}); err != nil {
		t.Fatal(err)
	}
	t.Setenv("RAFTCAST_API", "127.0.0.1:8000")
	l := layered{flags: fs}
	if got := l.str("name", "RAFTCAST_NAME", fc.Name, *name); got != "from-flag" {
		t.Errorf("name: %q, want the flag's", got)
	}
	if got := l.str("api", "RAFTCAST_API", fc.API, *api); got != "127.0.0.1:8000" {
		t.Errorf("api: %q, want the environment's", got)
	}
	if got, err := l.boolean("mdns", "RAFTCAST_MDNS", fc.MDNS, *mdns); err != nil || got {
		t.Errorf("mdns: %v %v, want the file's false", got, err)
	}
	if got := l.strings("bootstrap", "RAFTCAST_BOOTSTRAP", fc.Bootstrap, *boot); len(got) != 1 || !strings.HasPrefix(got[0], "/ip4/198.18.0.1") {
		t.Errorf("bootstrap: %v, want the file's", got)
	}
	t.Setenv("RAFTCAST_MDNS", "maybe")
	if _, err := l.boolean("mdns", "RAFTCAST_MDNS", fc.MDNS, *mdns); err == nil {
		t.Error("a bad boolean in the environment was accepted")
	}
	// An unknown key is an error that names it, not a silent default.
	if err := os.WriteFile(filepath.Join(dir, ConfigFile), []byte("nmae = \"typo\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := loadFileConfig(dir); err == nil || !strings.Contains(err.Error(), "nmae") {
		t.Errorf("unknown key: %v", err)
	}
}

func TestParseSizeAndRate(t *testing.T) {
	for in, want := range map[string]int64{"64MiB": 64 << 20, "1GiB": 1 << 30, "500": 500, "1.5KiB": 1536, "12MB": 12e6} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, want := range map[string]int64{"100Mbit": 12_500_000, "1Gbit": 125_000_000, "11MiB": 11 << 20} {
		if got, err := parseRate(in); err != nil || got != want {
			t.Errorf("parseRate(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "fast", "-1MiB", "12XB"} {
		if _, err := parseSize(bad); err == nil {
			t.Errorf("parseSize(%q) accepted", bad)
		}
	}
}
