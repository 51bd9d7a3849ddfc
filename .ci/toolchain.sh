#!/usr/bin/env bash
# Make the Pulumi CLI, its Python language host and the provider plugins that
# requirements.txt pins available to this project, without get.pulumi.com or
# GitHub downloads (neither is reachable from our machines).
#
#   bash .ci/toolchain.sh [--with-kubernetes] [--strict] [--retry]
#
# The CLI (CLI_VERSION: the newest pkg/v3 the Go module proxy serves, never
# older than the pinned SDK), in this order:
#   1. `pulumi` already on PATH whose `pulumi version` is exactly CLI_VERSION;
#   2. a finished build in the cache (stamp + `pulumi version` checked);
#   3. the official release tarball, when its host answers within seconds;
#   4. a build from Go modules: a wrapper module (in the cache, never in the
#      repo) that requires github.com/pulumi/pulumi/pkg/v3 and sdk/v3 at one
#      version and repeats pkg/v3's non-local replace directives, built like
#      upstream's release (-trimpath, tags osusergo,grpcnotrace, version ldflag).
#
# The Python language host: the upstream module
# github.com/pulumi/pulumi/sdk/python/cmd/pulumi-language-python/v3 is not
# served by that proxy (asked by commit and by its pseudo-version), so step 4
# builds a small host of our own (source below, same gRPC contract) on the
# sdk/v3 packages the upstream host uses (python/toolchain: pip, poetry or uv,
# and virtualenvs), next to the upstream scripts copied from the sdk/v3
# module: pulumi-language-python-exec (runs the program) and
# pulumi-resource-pulumi-python (dynamic providers).
#
# Provider plugins, each installed into the project-local PULUMI_HOME
# ($repo/.pulumi-home) with `pulumi plugin install resource NAME VERSION --file`
# from the plugin directory:
#
#   $MICROCLOUD_PLUGIN_DIR/NAME-vVERSION/pulumi-resource-NAME
#
# (default $MICROCLOUD_TOOLCHAIN_CACHE/plugins). That directory is how an
# air-gapped site brings the binaries of its own mirror, and the only source
# of libvirt, command, random and tls here: their provider modules are not
# served by the Go module proxy. kubernetes is built into it from Go modules
# (--with-kubernetes; heavy: ~10 min and ~4 GB on 2 cores). A plugin that is
# not there is reported as MISSING; --strict (or MICROCLOUD_TOOLCHAIN_STRICT=1)
# makes that an error (exit 3).
#
# Idempotent. A warm run only checks stamps and versions (seconds). Progress
# goes to stderr as short lines; Go's own output to $CACHE/logs/; the final
# report (`pulumi version`, `pulumi plugin ls`) to stdout. Prints and stores
# no secret.
#
#   MICROCLOUD_TOOLCHAIN_CACHE   cache root (default ~/.cache/microcloud-toolchain)
#   MICROCLOUD_PLUGIN_DIR        plugin binaries (default $MICROCLOUD_TOOLCHAIN_CACHE/plugins)
#   MICROCLOUD_WITH_KUBERNETES=1 same as --with-kubernetes
#   GO                           go binary (default: go on PATH, else /usr/local/go/bin/go)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# --- pins (requirements.txt; each wheel's pulumi-plugin.json names the same plugin version)
PULUMI_VERSION=3.272.0   # the Python SDK
CLI_VERSION=3.274.1      # the CLI: newest pkg/v3 the module proxy serves, >= the SDK
# name version
PROVIDERS=("command 1.2.1" "libvirt 0.5.4" "random 4.21.1" "tls 5.3.1")
KUBERNETES="kubernetes 4.25.0"
# pulumi-kubernetes has no provider tags: the commit of release 4.25.0, and the
# sdk module its go.mod replaces with ../sdk.
K8S_PROVIDER_MODULE=github.com/pulumi/pulumi-kubernetes/provider/v4@v4.0.0-20260115033456-f47bc2d6f199
K8S_SDK_MODULE=github.com/pulumi/pulumi-kubernetes/sdk/v4@v4.25.0
req_pin=$(sed -n 's/^pulumi==\([0-9.]*\).*/\1/p' "$REPO/requirements.txt" 2>/dev/null || true)
if [[ -n $req_pin && $req_pin != "$PULUMI_VERSION" ]]; then
  echo "toolchain.sh: WARNING: requirements.txt pins pulumi==$req_pin, this script $PULUMI_VERSION" >&2
fi

WITH_K8S=${MICROCLOUD_WITH_KUBERNETES:-0}
STRICT=${MICROCLOUD_TOOLCHAIN_STRICT:-0}
RETRY=0
for arg in "$@"; do
  case $arg in
    --with-kubernetes) WITH_K8S=1 ;;
    --strict) STRICT=1 ;;
    --retry) RETRY=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "toolchain.sh: unknown argument: $arg" >&2; exit 2 ;;
  esac
done

CACHE=${MICROCLOUD_TOOLCHAIN_CACHE:-$HOME/.cache/microcloud-toolchain}
PLUGIN_DIR=${MICROCLOUD_PLUGIN_DIR:-$CACHE/plugins}
LOGS=$CACHE/logs
export PULUMI_HOME=$REPO/.pulumi-home
POINTER=$PULUMI_HOME/toolchain-bin   # read by .ci/env.sh
NEGATIVE_TTL=$((24 * 3600))          # how long a refused download is not retried

log() { printf 'toolchain.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

case $(uname -m) in
  x86_64|amd64) ARCH=x64 ;;
  aarch64|arm64) ARCH=arm64 ;;
  *) die "unsupported machine $(uname -m)" ;;
esac

mkdir -p "$CACHE" "$PULUMI_HOME" "$LOGS"

# "Don't ask again for a while" markers for things the network refused.
refused_recently() { # key
  local f=$CACHE/refused/$1
  [[ $RETRY == 0 && -f $f ]] && (($(date +%s) - $(stat -c %Y "$f") < NEGATIVE_TTL))
}
mark_refused() { mkdir -p "$CACHE/refused"; printf '%s\n' "${2:-refused}" >"$CACHE/refused/$1"; }

# --- the language host we build when the upstream one is not to be had ------
# Kept here so that the stamp (a hash of this text) rebuilds it when it changes.
LANGHOST_SRC=$(cat <<'GO'
// pulumi-language-python: a Python language host for the Pulumi CLI, written
// for microcloud's .ci/toolchain.sh because the upstream host's Go module is
// not served by the module proxy our machines reach. It speaks the same
// LanguageRuntime gRPC contract and leaves the real work to the same upstream
// pieces the upstream host uses: sdk/v3/python/toolchain (pip, poetry or uv,
// and the project's virtualenv) and the pulumi-language-python-exec script
// from the same sdk/v3 version, which must sit next to this binary.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/logging"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/rpcutil"
	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"github.com/pulumi/pulumi/sdk/v3/python/toolchain"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/emptypb"
)

// Set with -ldflags "-X main.version=...": the sdk/v3 version built against.
var version = "v0.0.0-dev"

// The exec script exits with this code after it has shown the user an error.
const bailExitCode = 32

// Lists the installed distributions that ship a pulumi-plugin.json next to
// their top-level package, the way provider SDKs declare their plugin.
const listPluginsPy = `
import importlib.metadata as md, json, sys
out, seen = [], set()
for dist in md.distributions():
    for f in dist.files or ():
        if len(f.parts) != 2 or f.parts[1] != "pulumi-plugin.json":
            continue
        try:
            data = json.loads(f.read_text())
        except Exception:
            continue
        if not isinstance(data, dict) or not data.get("resource") or not data.get("name"):
            continue
        key = (data.get("name"), data.get("version"), json.dumps(data.get("parameterization"), sort_keys=True))
        if key not in seen:
            seen.add(key)
            out.append(data)
json.dump(out, sys.stdout)
`

type pluginJSON struct {
	Name             string `json:"name"`
	Version          string `json:"version"`
	Server           string `json:"server"`
	Parameterization *struct {
		Name    string `json:"name"`
		Version string `json:"version"`
		Value   []byte `json:"value"`
	} `json:"parameterization"`
}

type host struct {
	pulumirpc.UnimplementedLanguageRuntimeServer
	execScript string
	tracing    string

	mu            sync.Mutex
	engineAddress string
}

func main() {
	tracing := flag.String("tracing", "", "Emit tracing to a Zipkin-compatible tracing endpoint")
	// Older CLIs passed these; options now arrive with each request.
	flag.String("root", "", "unused")
	flag.String("virtualenv", "", "unused")
	flag.String("toolchain", "", "unused")
	flag.String("typechecker", "", "unused")
	flag.Parse()
	logging.InitLogging(false, 0, false)
	cmdutil.InitTracing("pulumi-language-python", "pulumi-language-python", *tracing)

	self, err := os.Executable()
	if err != nil {
		cmdutil.Exit(fmt.Errorf("locating pulumi-language-python: %w", err))
	}
	if resolved, err := filepath.EvalSymlinks(self); err == nil {
		self = resolved
	}
	h := &host{
		execScript: filepath.Join(filepath.Dir(self), "pulumi-language-python-exec"),
		tracing:    *tracing,
	}
	if _, err := os.Stat(h.execScript); err != nil {
		cmdutil.Exit(fmt.Errorf("pulumi-language-python-exec must sit next to pulumi-language-python: %w", err))
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if flag.NArg() > 0 {
		h.engineAddress = flag.Arg(0)
		// Exit when the engine goes away.
		go func() { _ = rpcutil.Healthcheck(ctx, h.engineAddress, 5*time.Minute, cancel) }()
	}
	stop := make(chan bool)
	go func() { <-ctx.Done(); close(stop) }()

	handle, err := rpcutil.ServeWithOptions(rpcutil.ServeOptions{
		Cancel: stop,
		Init: func(srv *grpc.Server) error {
			pulumirpc.RegisterLanguageRuntimeServer(srv, h)
			return nil
		},
		Options: rpcutil.OpenTracingServerInterceptorOptions(nil),
	})
	if err != nil {
		cmdutil.Exit(fmt.Errorf("could not start language host RPC server: %w", err))
	}
	fmt.Printf("%d\n", handle.Port)
	if err := <-handle.Done; err != nil {
		cmdutil.Exit(fmt.Errorf("language host RPC stopped serving: %w", err))
	}
}

// resolve reads the runtime options of Pulumi.yaml (virtualenv, toolchain,
// typechecker) and returns the toolchain that runs the project's Python.
func resolve(info *pulumirpc.ProgramInfo, fallbackDir string) (toolchain.Toolchain, toolchain.PythonOptions, error) {
	opts := toolchain.PythonOptions{
		Root:       info.GetRootDirectory(),
		ProgramDir: info.GetProgramDirectory(),
		Toolchain:  toolchain.Auto,
	}
	if opts.Root == "" {
		opts.Root = fallbackDir
	}
	if opts.ProgramDir == "" {
		opts.ProgramDir = opts.Root
	}
	options := info.GetOptions().AsMap()
	if v, ok := options["virtualenv"].(string); ok {
		opts.Virtualenv = v
	}
	switch v := options["toolchain"]; v {
	case nil, "":
	case "pip":
		opts.Toolchain = toolchain.Pip
	case "poetry":
		opts.Toolchain = toolchain.Poetry
	case "uv":
		opts.Toolchain = toolchain.Uv
	default:
		return nil, opts, fmt.Errorf("unsupported python toolchain %v (pip, poetry or uv)", v)
	}
	switch v := options["typechecker"]; v {
	case nil, "":
	case "mypy":
		opts.Typechecker = toolchain.TypeCheckerMypy
	case "pyright":
		opts.Typechecker = toolchain.TypeCheckerPyright
	default:
		return nil, opts, fmt.Errorf("unsupported python typechecker %v (mypy or pyright)", v)
	}
	tc, err := toolchain.ResolveToolchain(opts)
	return tc, opts, err
}

func (h *host) Handshake(ctx context.Context, req *pulumirpc.LanguageHandshakeRequest,
) (*pulumirpc.LanguageHandshakeResponse, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if req.GetEngineAddress() != "" {
		h.engineAddress = req.GetEngineAddress()
	}
	return &pulumirpc.LanguageHandshakeResponse{}, nil
}

func (h *host) GetPluginInfo(context.Context, *emptypb.Empty) (*pulumirpc.PluginInfo, error) {
	return &pulumirpc.PluginInfo{Version: version}, nil
}

func (h *host) requiredPlugins(ctx context.Context, info *pulumirpc.ProgramInfo, pwd string) ([]pluginJSON, error) {
	tc, _, err := resolve(info, pwd)
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	cmd, err := tc.Command(ctx, "-c", listPluginsPy)
	if err != nil {
		return nil, err
	}
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the Python packages that declare a Pulumi plugin: %w", err)
	}
	var plugins []pluginJSON
	if err := json.Unmarshal(out, &plugins); err != nil {
		return nil, fmt.Errorf("reading the list of Pulumi plugins: %w", err)
	}
	return plugins, nil
}

func (h *host) GetRequiredPackages(ctx context.Context, req *pulumirpc.GetRequiredPackagesRequest,
) (*pulumirpc.GetRequiredPackagesResponse, error) {
	plugins, err := h.requiredPlugins(ctx, req.GetInfo(), "")
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPackagesResponse{}
	for _, p := range plugins {
		dep := &pulumirpc.PackageDependency{Kind: "resource", Name: p.Name, Version: p.Version, Server: p.Server}
		if p.Parameterization != nil {
			dep.Parameterization = &pulumirpc.PackageParameterization{
				Name: p.Parameterization.Name, Version: p.Parameterization.Version, Value: p.Parameterization.Value,
			}
		}
		resp.Packages = append(resp.Packages, dep)
	}
	return resp, nil
}

func (h *host) GetRequiredPlugins(ctx context.Context, req *pulumirpc.GetRequiredPluginsRequest,
) (*pulumirpc.GetRequiredPluginsResponse, error) {
	plugins, err := h.requiredPlugins(ctx, req.GetInfo(), req.GetPwd())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetRequiredPluginsResponse{}
	for _, p := range plugins {
		if p.Parameterization == nil {
			resp.Plugins = append(resp.Plugins,
				&pulumirpc.PluginDependency{Kind: "resource", Name: p.Name, Version: p.Version, Server: p.Server})
		}
	}
	return resp, nil
}

func (h *host) Run(ctx context.Context, req *pulumirpc.RunRequest) (*pulumirpc.RunResponse, error) {
	tc, opts, err := resolve(req.GetInfo(), req.GetPwd())
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}

	if opts.Typechecker != toolchain.TypeCheckerNone {
		module := "mypy"
		if opts.Typechecker == toolchain.TypeCheckerPyright {
			module = "pyright"
		}
		check, err := tc.ModuleCommand(ctx, module, opts.ProgramDir)
		if err != nil {
			return &pulumirpc.RunResponse{Error: err.Error()}, nil
		}
		check.Dir = opts.ProgramDir
		check.Stdout, check.Stderr = os.Stdout, os.Stderr
		if err := check.Run(); err != nil {
			return &pulumirpc.RunResponse{Error: fmt.Sprintf("%s type checking failed: %v", module, err)}, nil
		}
	}

	h.mu.Lock()
	engine := h.engineAddress
	h.mu.Unlock()
	args := []string{h.execScript}
	add := func(k, v string) {
		if v != "" {
			args = append(args, "--"+k, v)
		}
	}
	add("monitor", req.GetMonitorAddress())
	add("engine", engine)
	add("project", req.GetProject())
	add("stack", req.GetStack())
	add("pwd", req.GetPwd())
	add("dry_run", fmt.Sprint(req.GetDryRun()))
	add("parallel", fmt.Sprint(req.GetParallel()))
	add("tracing", h.tracing)
	add("organization", req.GetOrganization())
	add("root_directory", opts.Root)
	program := req.GetProgram()
	if program == "" {
		program = "."
	}
	args = append(append(args, program), req.GetArgs()...)

	// Never "null": the SDK expects an object and a list.
	configMap, keys := req.GetConfig(), req.GetConfigSecretKeys()
	if configMap == nil {
		configMap = map[string]string{}
	}
	if keys == nil {
		keys = []string{}
	}
	config, err := json.Marshal(configMap)
	if err != nil {
		return nil, err
	}
	secretKeys, err := json.Marshal(keys)
	if err != nil {
		return nil, err
	}

	cmd, err := tc.Command(ctx, args...)
	if err != nil {
		return &pulumirpc.RunResponse{Error: err.Error()}, nil
	}
	if cmd.Env == nil {
		cmd.Env = os.Environ()
	}
	cmd.Env = append(cmd.Env,
		"PULUMI_CONFIG="+string(config),
		"PULUMI_CONFIG_SECRET_KEYS="+string(secretKeys),
		"PYTHONUNBUFFERED=1")
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var exitErr *exec.ExitError
		if errors.As(err, &exitErr) {
			if exitErr.ExitCode() == bailExitCode {
				return &pulumirpc.RunResponse{Bail: true}, nil
			}
			return &pulumirpc.RunResponse{
				Error: fmt.Sprintf("Program exited with non-zero exit code: %d", exitErr.ExitCode()),
			}, nil
		}
		return &pulumirpc.RunResponse{
			Error: fmt.Sprintf("Problem executing program (could not run language executor): %v", err),
		}, nil
	}
	return &pulumirpc.RunResponse{}, nil
}

// streamWriter forwards install output to the CLI.
type streamWriter func([]byte) error

func (w streamWriter) Write(p []byte) (int, error) {
	if err := w(append([]byte(nil), p...)); err != nil {
		return 0, err
	}
	return len(p), nil
}

func (h *host) InstallDependencies(req *pulumirpc.InstallDependenciesRequest,
	server pulumirpc.LanguageRuntime_InstallDependenciesServer,
) error {
	tc, opts, err := resolve(req.GetInfo(), req.GetDirectory())
	if err != nil {
		return err
	}
	var stdout, stderr io.Writer = streamWriter(func(b []byte) error {
		return server.Send(&pulumirpc.InstallDependenciesResponse{Stdout: b})
	}), streamWriter(func(b []byte) error {
		return server.Send(&pulumirpc.InstallDependenciesResponse{Stderr: b})
	})
	return tc.InstallDependencies(server.Context(), opts.Root, req.GetUseLanguageVersionTools(),
		true /*showOutput*/, stdout, stderr)
}

func (h *host) About(ctx context.Context, req *pulumirpc.AboutRequest) (*pulumirpc.AboutResponse, error) {
	tc, _, err := resolve(req.GetInfo(), "")
	if err != nil {
		return nil, err
	}
	info, err := tc.About(ctx)
	if err != nil {
		return nil, err
	}
	return &pulumirpc.AboutResponse{Executable: info.PythonExecutable, Version: info.PythonVersion.String()}, nil
}

func (h *host) GetProgramDependencies(ctx context.Context, req *pulumirpc.GetProgramDependenciesRequest,
) (*pulumirpc.GetProgramDependenciesResponse, error) {
	tc, _, err := resolve(req.GetInfo(), req.GetPwd())
	if err != nil {
		return nil, err
	}
	if err := tc.ValidateVenv(ctx); err != nil {
		return nil, err
	}
	pkgs, err := tc.ListPackages(ctx, req.GetTransitiveDependencies())
	if err != nil {
		return nil, err
	}
	resp := &pulumirpc.GetProgramDependenciesResponse{}
	for _, p := range pkgs {
		resp.Dependencies = append(resp.Dependencies, &pulumirpc.DependencyInfo{Name: p.Name, Version: p.Version})
	}
	return resp, nil
}

func (h *host) RuntimeOptionsPrompts(context.Context, *pulumirpc.RuntimeOptionsRequest,
) (*pulumirpc.RuntimeOptionsResponse, error) {
	return &pulumirpc.RuntimeOptionsResponse{}, nil
}
GO
)

# --- Go ------------------------------------------------------------------------
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
go_env() {
  [[ -x $GO ]] || die "no go toolchain (looked for go on PATH and $GO)"
  # Never fetch another toolchain; static binaries; 2 cores.
  export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=mod -buildvcs=false"
}
go_mod_dir() { "$GO" mod download -json "$1" 2>/dev/null | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'; }
GOBUILD=(build -p 2 -trimpath)

# --- the CLI -------------------------------------------------------------------
CLI_BINARIES=(pulumi pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python)
langhost_hash() { printf '%s' "$LANGHOST_SRC" | sha256sum | cut -c1-16; }

cli_current() { # version -> 0 if $CACHE/pulumi-v$version is complete and current
  local dir=$CACHE/pulumi-v$1 f source
  [[ -f $dir/stamp ]] || return 1
  source=$(sed -n 's/^source=//p' "$dir/stamp")
  [[ $(sed -n 's/^version=//p' "$dir/stamp") == "v$1" ]] || return 1
  if [[ $source == go ]]; then
    [[ $(sed -n 's/^langhost=//p' "$dir/stamp") == "$(langhost_hash)" ]] || return 1
  fi
  for f in "${CLI_BINARIES[@]}"; do [[ -x $dir/bin/$f ]] || return 1; done
  [[ $(PULUMI_SKIP_UPDATE_CHECK=true "$dir/bin/pulumi" version 2>/dev/null) == "v$1" ]]
}

official_reachable() {
  refused_recently official && return 1
  if curl -fsSI --connect-timeout 3 --max-time 6 -o /dev/null \
      "https://get.pulumi.com/releases/sdk/pulumi-v$CLI_VERSION-linux-$ARCH.tar.gz" 2>/dev/null; then
    return 0
  fi
  mark_refused official "get.pulumi.com unreachable"
  return 1
}

cli_from_official() { # version
  local v=$1 dir=$CACHE/pulumi-v$1 tmp sum want
  official_reachable || return 1
  log "downloading the official Pulumi v$v release"
  tmp=$(mktemp -d)
  local base=https://get.pulumi.com/releases/sdk
  if ! curl -fsSL --max-time 300 -o "$tmp/p.tgz" "$base/pulumi-v$v-linux-$ARCH.tar.gz" ||
     ! curl -fsSL --max-time 60 -o "$tmp/sums" "$base/pulumi-$v-checksums.txt"; then
    rm -rf "$tmp"; log "official download failed"; return 1
  fi
  want=$(awk -v f="pulumi-v$v-linux-$ARCH.tar.gz" '$2 == f {print $1}' "$tmp/sums")
  sum=$(sha256sum "$tmp/p.tgz" | cut -d' ' -f1)
  if [[ -z $want || $want != "$sum" ]]; then rm -rf "$tmp"; log "checksum mismatch for the official tarball"; return 1; fi
  rm -rf "$dir"; mkdir -p "$dir/bin"
  tar -xzf "$tmp/p.tgz" -C "$dir/bin" --strip-components=1
  rm -rf "$tmp"
  printf 'version=v%s\nsource=official\n' "$v" >"$dir/stamp"
}

cli_from_go() { # version
  local v=$1 dir=$CACHE/pulumi-v$1 work pkgmod sdkdir start=$SECONDS
  refused_recently "pkg-v$v" && return 1
  go_env
  log "resolving github.com/pulumi/pulumi/pkg/v3@v$v"
  pkgmod=$("$GO" mod download -json "github.com/pulumi/pulumi/pkg/v3@v$v" 2>/dev/null |
    sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",$/\1/p') || true
  if [[ -z $pkgmod || ! -f $pkgmod ]]; then
    log "the module proxy does not serve github.com/pulumi/pulumi/pkg/v3@v$v"
    mark_refused "pkg-v$v" "pkg/v3@v$v not served"
    return 1
  fi
  sdkdir=$(go_mod_dir "github.com/pulumi/pulumi/sdk/v3@v$v")
  [[ -n $sdkdir && -f $sdkdir/python/cmd/pulumi-language-python-exec ]] ||
    { log "the module proxy does not serve github.com/pulumi/pulumi/sdk/v3@v$v"; return 1; }

  log "building Pulumi CLI v$v from Go modules with $("$GO" env GOVERSION)"
  work=$CACHE/work/pulumi-v$v
  rm -rf "$work" "$dir.tmp"
  mkdir -p "$work/cli" "$work/langhost" "$dir.tmp/bin"

  # Wrapper module: pkg/v3 + sdk/v3 at v, plus pkg/v3's non-local replaces
  # (upstream replaces sdk/v3 with ../sdk; the require below stands for it).
  local gover replaces
  gover=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$pkgmod")
  replaces=$(awk '
    /^replace \(/ {blk=1; next}
    blk && /^\)/ {blk=0; next}
    blk {print "replace " $0; next}
    /^replace / {print}' "$pkgmod" |
    awk '{t = $0; sub(/^[^>]*=>[ \t]*/, "", t)} t !~ /^(\.\.?)?\//')
  {
    printf 'module microcloud.local/pulumi-cli\n\ngo %s\n\n' "$gover"
    printf 'require (\n\tgithub.com/pulumi/pulumi/pkg/v3 v%s\n\tgithub.com/pulumi/pulumi/sdk/v3 v%s\n)\n\n' "$v" "$v"
    if [[ -n $replaces ]]; then printf '%s\n' "$replaces"; fi
  } >"$work/cli/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/pulumi/pulumi/pkg/v3/cmd/pulumi"\n' >"$work/cli/tools.go"
  log "wrapper go.mod: go $gover; replaces: ${replaces:-none}"
  local golog=$LOGS/pulumi-v$v.log
  log "building the CLI (go output: $golog)"
  (cd "$work/cli" && "$GO" mod tidy &&
    "$GO" "${GOBUILD[@]}" -tags osusergo,grpcnotrace \
      -ldflags "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$v" \
      -o "$dir.tmp/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi) >"$golog" 2>&1 ||
    { log "building the Pulumi CLI v$v failed; last lines of $golog:"; tail -n 15 "$golog" >&2; return 1; }

  # Language host (see the header) against the same sdk/v3.
  printf '%s\n' "$LANGHOST_SRC" >"$work/langhost/main.go"
  printf 'module microcloud.local/pulumi-language-python\n\ngo %s\n\nrequire github.com/pulumi/pulumi/sdk/v3 v%s\n' \
    "$gover" "$v" >"$work/langhost/go.mod"
  log "building the Python language host"
  (cd "$work/langhost" && "$GO" mod tidy &&
    "$GO" "${GOBUILD[@]}" -ldflags "-X main.version=v$v" -o "$dir.tmp/bin/pulumi-language-python" .) >>"$golog" 2>&1 ||
    { log "building the Python language host failed; last lines of $golog:"; tail -n 15 "$golog" >&2; return 1; }

  install -m 0755 "$sdkdir/python/cmd/pulumi-language-python-exec" "$dir.tmp/bin/"
  install -m 0755 "$sdkdir/python/dist/pulumi-resource-pulumi-python" "$dir.tmp/bin/"
  printf 'version=v%s\nsource=go\nlanghost=%s\ngo=%s\n' "$v" "$(langhost_hash)" "$("$GO" env GOVERSION)" >"$dir.tmp/stamp"
  rm -rf "$dir"; mv "$dir.tmp" "$dir"
  log "built Pulumi CLI v$v in $((SECONDS - start))s"
}

find_cli() { # sets BIN
  local p
  # 1. exactly the pin on PATH (not one of our own builds of another version)
  if p=$(command -v pulumi 2>/dev/null) &&
     [[ $(PULUMI_SKIP_UPDATE_CHECK=true pulumi version 2>/dev/null) == "v$CLI_VERSION" ]]; then
    BIN=$(dirname "$(readlink -f "$p")"); log "using pulumi v$CLI_VERSION on PATH ($BIN)"; return 0
  fi
  # 2. a finished build in the cache; 3./4. the official release, else Go modules
  if cli_current "$CLI_VERSION"; then BIN=$CACHE/pulumi-v$CLI_VERSION/bin; return 0; fi
  exec 9>"$CACHE/.lock"; flock 9
  if cli_current "$CLI_VERSION"; then BIN=$CACHE/pulumi-v$CLI_VERSION/bin; return 0; fi
  if cli_from_official "$CLI_VERSION" || { cli_from_go "$CLI_VERSION" && cli_current "$CLI_VERSION"; }; then
    BIN=$CACHE/pulumi-v$CLI_VERSION/bin; return 0
  fi
  die "no Pulumi CLI v$CLI_VERSION: not on PATH, not cached, official download unreachable, Go build failed (log: $LOGS)"
}

BIN=
find_cli
printf '%s\n' "$BIN" >"$POINTER"
# shellcheck source-path=SCRIPTDIR source=env.sh
source "$REPO/.ci/env.sh"
[[ $(pulumi version) == "v$CLI_VERSION" ]] || die "pulumi on PATH after env.sh is $(pulumi version), not v$CLI_VERSION"
[[ -x $BIN/pulumi-language-python ]] || command -v pulumi-language-python >/dev/null ||
  log "WARNING: no pulumi-language-python next to $BIN/pulumi or on PATH"

# --- provider plugins ----------------------------------------------------------
plugin_installed() { # name version
  local d=$PULUMI_HOME/plugins/resource-$1-v$2
  [[ -x $d/pulumi-resource-$1 && ! -e $d.partial ]]
}

# pulumi-resource-kubernetes from Go modules into the plugin directory: the
# provider module at the commit of the release, its ../sdk replace swapped for
# the served sdk module, the schema embedded by the module's own go generate.
kubernetes_from_go() { # version out
  local ver=$1 out=$2 dir work golog=$LOGS/kubernetes-v$1.log start=$SECONDS
  go_env
  dir=$(go_mod_dir "$K8S_PROVIDER_MODULE")
  [[ -n $dir ]] || { log "kubernetes: the module proxy does not serve $K8S_PROVIDER_MODULE"; return 1; }
  log "kubernetes: building v$ver from $K8S_PROVIDER_MODULE (go output: $golog)"
  work=$CACHE/work/kubernetes-v$ver
  rm -rf "$work"; mkdir -p "$(dirname "$work")"
  cp -r "$dir" "$work"; chmod -R u+w "$work"
  (cd "$work" &&
    "$GO" mod edit -dropreplace=github.com/pulumi/pulumi-kubernetes/sdk/v4 -require="$K8S_SDK_MODULE" &&
    "$GO" mod tidy &&
    VERSION=$ver "$GO" generate ./cmd/pulumi-resource-kubernetes &&
    "$GO" "${GOBUILD[@]}" -ldflags "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$ver" \
      -o "$out" ./cmd/pulumi-resource-kubernetes) >"$golog" 2>&1 ||
    { log "kubernetes: build failed; last lines of $golog:"; tail -n 15 "$golog" >&2; return 1; }
  rm -rf "$work"
  log "kubernetes: built v$ver in $((SECONDS - start))s"
}

MISSING=()
ensure_plugin() { # name version
  local name=$1 ver=$2 bin=$PLUGIN_DIR/$1-v$2/pulumi-resource-$1
  if plugin_installed "$name" "$ver"; then return 0; fi
  if [[ ! -x $bin && $name == kubernetes ]]; then
    mkdir -p "$(dirname "$bin")"
    kubernetes_from_go "$ver" "$bin.tmp" && mv -f "$bin.tmp" "$bin"
  fi
  if [[ ! -x $bin ]]; then
    log "$name v$ver: no $bin"
    MISSING+=("$name@$ver"); return 0
  fi
  log "$name: installing v$ver from $bin into $PULUMI_HOME"
  pulumi plugin install resource "$name" "$ver" --file "$bin" >>"$LOGS/plugin-install.log" 2>&1 ||
    { log "$name: pulumi plugin install failed (see $LOGS/plugin-install.log)"; MISSING+=("$name@$ver"); }
}

[[ $WITH_K8S == 1 ]] && PROVIDERS+=("$KUBERNETES")
for p in "${PROVIDERS[@]}"; do
  read -r name ver <<<"$p"
  if ! plugin_installed "$name" "$ver"; then
    exec 9>"$CACHE/.lock"; flock 9   # one builder/installer at a time
    ensure_plugin "$name" "$ver"
  fi
done

# Cross-check against the installed wheels (the venv may not exist yet).
for p in "${PROVIDERS[@]}" "$KUBERNETES"; do
  read -r name ver <<<"$p"
  for json in "$REPO"/venv/lib/python3*/site-packages/pulumi_"$name"/pulumi-plugin.json; do
    [[ -f $json ]] || continue
    got=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' "$json")
    [[ $got == "$ver" ]] || log "WARNING: pulumi_$name wheel wants plugin v$got, this script provides v$ver"
  done
done

# --- report --------------------------------------------------------------------
echo "pulumi: $(command -v pulumi) $(pulumi version)"
echo "language host: $(command -v pulumi-language-python || echo "$BIN/pulumi-language-python")"
echo "PULUMI_HOME=$PULUMI_HOME"
pulumi plugin ls
if ((${#MISSING[@]})); then
  echo "MISSING provider plugins: ${MISSING[*]} (put each binary at $PLUGIN_DIR/NAME-vVERSION/pulumi-resource-NAME; see README, Toolchain)"
  [[ $STRICT == 1 ]] && exit 3
fi
exit 0
