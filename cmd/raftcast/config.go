package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
	"github.com/spf13/pflag"
)

// ConfigFile is the daemon's configuration file in the data dir. Every key mirrors a flag;
// precedence is flag > environment (RAFTCAST_<KEY>, lists comma-separated) > file > default.
const ConfigFile = "config.toml"

type fileConfig struct {
	Listen         []string `toml:"listen"`
	Bootstrap      []string `toml:"bootstrap"`
	API            string   `toml:"api"`
	Name           string   `toml:"name"`
	MDNS           *bool    `toml:"mdns"`
	MulticastIface []string `toml:"multicast_iface"`
	LogLevel       string   `toml:"log_level"`
}

func loadFileConfig(dir string) (fileConfig, error) {
	var fc fileConfig
	path := filepath.Join(dir, ConfigFile)
	md, err := toml.DecodeFile(path, &fc)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return fc, nil
		}
		return fc, fmt.Errorf("config file %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return fc, fmt.Errorf("config file %s: unknown key %q", path, und[0].String())
	}
	return fc, nil
}

// layered resolves one setting from flag, environment and file, in that order.
type layered struct {
	flags *pflag.FlagSet
}

func (l layered) strings(flag, env string, file []string, flagVal []string) []string {
	if l.flags.Changed(flag) {
		return flagVal
	}
	if v, ok := os.LookupEnv(env); ok {
		var out []string
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	if file != nil {
		return file
	}
	return flagVal
}

func (l layered) str(flag, env, file, flagVal string) string {
	if l.flags.Changed(flag) {
		return flagVal
	}
	if v, ok := os.LookupEnv(env); ok {
		return v
	}
	if file != "" {
		return file
	}
	return flagVal
}

func (l layered) boolean(flag, env string, file *bool, flagVal bool) (bool, error) {
	if l.flags.Changed(flag) {
		return flagVal, nil
	}
	if v, ok := os.LookupEnv(env); ok {
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, usagef("%s: want true or false, got %q", env, v)
		}
		return b, nil
	}
	if file != nil {
		return *file, nil
	}
	return flagVal, nil
}
