// k3s-registries-check FILE...: each file is read the way K3s reads
// /etc/rancher/k3s/registries.yaml, by the loader K3s builds containerd's
// registry config with (github.com/rancher/wharfie/pkg/registries), and
// strictly: a key K3s' types do not have (a typo K3s would ignore without a
// word) fails, as do an endpoint that is not an http(s) URL with a host, a
// rewrite that is not a regular expression, and an auth entry without a user.
//
// Prints one summary line per file, never a value: the files hold passwords.
// Exit status 0 when every file passes, 1 when one does not, 2 on misuse.
package main

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"sort"

	"github.com/rancher/wharfie/pkg/registries"
	"github.com/sirupsen/logrus"
	"gopkg.in/yaml.v2"
)

func main() {
	// The loader logs "Using private registry config file at ..." on every read.
	logrus.SetLevel(logrus.WarnLevel)
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: k3s-registries-check FILE...")
		os.Exit(2)
	}
	failed := false
	for _, path := range os.Args[1:] {
		summary, err := check(path)
		if err != nil {
			fmt.Fprintf(os.Stderr, "%s: %v\n", path, err)
			failed = true
			continue
		}
		fmt.Printf("%s: ok: %s\n", path, summary)
	}
	if failed {
		os.Exit(1)
	}
}

func check(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	// K3s' own loader first: what it refuses, K3s refuses at start.
	loaded, err := registries.GetPrivateRegistries(path)
	if err != nil {
		return "", fmt.Errorf("K3s' registries loader refused it: %v", err)
	}
	var strict registries.Registry
	if err := yaml.UnmarshalStrict(data, &strict); err != nil {
		return "", fmt.Errorf("not K3s' registries.yaml schema: %v", err)
	}
	if len(strict.Auths) > 0 {
		return "", fmt.Errorf("auths is containerd's deprecated form; use configs.<registry>.auth")
	}
	for _, name := range keys(strict.Mirrors) {
		m := strict.Mirrors[name]
		if len(m.Endpoints) == 0 {
			return "", fmt.Errorf("mirror %s has no endpoint", name)
		}
		for _, e := range m.Endpoints {
			u, err := url.Parse(e)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return "", fmt.Errorf("mirror %s: endpoint %q is not an http(s) URL with a host", name, e)
			}
		}
		for pattern := range m.Rewrites {
			if _, err := regexp.Compile(pattern); err != nil {
				return "", fmt.Errorf("mirror %s: rewrite %q is not a regular expression: %v", name, pattern, err)
			}
		}
	}
	auths := 0
	for _, name := range keys(strict.Configs) {
		c := strict.Configs[name]
		if c.Auth != nil {
			if c.Auth.Username == "" && c.Auth.Auth == "" && c.Auth.IdentityToken == "" {
				return "", fmt.Errorf("configs %s: auth without a username", name)
			}
			if c.Auth.Username != "" && c.Auth.Password == "" {
				return "", fmt.Errorf("configs %s: auth with a username but no password", name)
			}
			auths++
		}
	}
	if len(loaded.Registry.Mirrors) != len(strict.Mirrors) || len(loaded.Registry.Configs) != len(strict.Configs) {
		return "", fmt.Errorf("K3s' loader read %d mirrors and %d configs, the strict reading %d and %d",
			len(loaded.Registry.Mirrors), len(loaded.Registry.Configs), len(strict.Mirrors), len(strict.Configs))
	}
	return fmt.Sprintf("%d mirrors, %d configs, %d with auth", len(strict.Mirrors), len(strict.Configs), auths), nil
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
