package main

// The host's contract with the CLI and with Python, against a real python3
// and a real (pip-less, so fast) virtualenv: which plugins a project declares,
// and how Run hands the program over to pulumi-language-python-exec.
// .ci/toolchain.sh runs these before it installs a new build of the host.

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	pulumirpc "github.com/pulumi/pulumi/sdk/v3/proto/go"
	"google.golang.org/protobuf/types/known/structpb"
)

// fakeDist installs a distribution into site: name/pulumi-plugin.json with
// the given content, listed in the dist's RECORD the way a wheel lists it.
func fakeDist(t *testing.T, site, name, pluginJSON string) {
	t.Helper()
	pkg := filepath.Join(site, name)
	info := filepath.Join(site, name+"-1.0.dist-info")
	for _, d := range []string{pkg, info} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		filepath.Join(pkg, "__init__.py"):        "",
		filepath.Join(pkg, "pulumi-plugin.json"): pluginJSON,
		filepath.Join(info, "METADATA"):          "Metadata-Version: 2.1\nName: " + name + "\nVersion: 1.0\n",
		filepath.Join(info, "RECORD"): name + "/__init__.py,,\n" + name + "/pulumi-plugin.json,,\n" +
			name + "-1.0.dist-info/METADATA,,\n" + name + "-1.0.dist-info/RECORD,,\n",
	}
	for p, body := range files {
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func installFakes(t *testing.T, site string) {
	fakeDist(t, site, "pulumi_fake", `{"resource": true, "name": "fake", "version": "1.2.3", "server": "https://example.invalid"}`)
	fakeDist(t, site, "pulumi_fake_again", `{"resource": true, "name": "fake", "version": "1.2.3", "server": "https://example.invalid"}`)
	fakeDist(t, site, "pulumi_other", `{"resource": true, "name": "other", "version": "0.5.4"}`)
	fakeDist(t, site, "not_a_provider", `{"resource": false, "name": "nope", "version": "9.9.9"}`)
	fakeDist(t, site, "broken_json", `{"resource": true, `)
}

var (
	venvOnce sync.Once
	venvRoot string
	venvErr  error
)

// project returns a project root with a virtualenv "venv" holding the fake
// distributions; one for the whole test binary.
func project(t *testing.T) string {
	t.Helper()
	venvOnce.Do(func() {
		venvRoot, venvErr = os.MkdirTemp("", "langhost-test-")
		if venvErr != nil {
			return
		}
		out, err := exec.Command("python3", "-m", "venv", "--without-pip", filepath.Join(venvRoot, "venv")).CombinedOutput()
		if err != nil {
			venvErr = err
			venvRoot = string(out)
		}
	})
	if venvErr != nil {
		t.Fatalf("python3 -m venv: %v %s", venvErr, venvRoot)
	}
	sites, _ := filepath.Glob(filepath.Join(venvRoot, "venv", "lib", "python3*", "site-packages"))
	if len(sites) != 1 {
		t.Fatalf("no single site-packages in the test venv: %v", sites)
	}
	if _, err := os.Stat(filepath.Join(sites[0], "pulumi_fake")); err != nil {
		installFakes(t, sites[0])
	}
	return venvRoot
}

func TestMain(m *testing.M) {
	code := m.Run()
	if venvRoot != "" && venvErr == nil {
		os.RemoveAll(venvRoot)
	}
	os.Exit(code)
}

func info(t *testing.T, root string, options map[string]any) *pulumirpc.ProgramInfo {
	t.Helper()
	opts, err := structpb.NewStruct(options)
	if err != nil {
		t.Fatal(err)
	}
	return &pulumirpc.ProgramInfo{RootDirectory: root, ProgramDirectory: root, EntryPoint: ".", Options: opts}
}

func TestRequiredPluginsComeFromTheVirtualenv(t *testing.T) {
	root := project(t)
	h := &host{}
	resp, err := h.GetRequiredPlugins(context.Background(), &pulumirpc.GetRequiredPluginsRequest{
		Info: info(t, root, map[string]any{"virtualenv": "venv", "toolchain": "pip"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range resp.GetPlugins() {
		if p.GetKind() != "resource" {
			t.Errorf("plugin %s has kind %q", p.GetName(), p.GetKind())
		}
		got = append(got, p.GetName()+"@"+p.GetVersion()+" "+p.GetServer())
	}
	sort.Strings(got)
	// One entry for the two dists of fake; nothing for resource:false or broken JSON.
	want := []string{"fake@1.2.3 https://example.invalid", "other@0.5.4 "}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("plugins = %q, want %q", got, want)
	}
}

func TestMissingVirtualenvIsAnError(t *testing.T) {
	h := &host{}
	_, err := h.GetRequiredPlugins(context.Background(), &pulumirpc.GetRequiredPluginsRequest{
		Info: info(t, t.TempDir(), map[string]any{"virtualenv": "venv"}),
	})
	if err == nil || !strings.Contains(err.Error(), "venv") {
		t.Fatalf("want an error naming the missing virtualenv, got %v", err)
	}
}

func TestUnknownToolchainAndTypechecker(t *testing.T) {
	for _, opts := range []map[string]any{{"toolchain": "conda"}, {"typechecker": "pytype"}} {
		_, _, err := resolve(info(t, t.TempDir(), opts), "")
		if err == nil || !strings.Contains(err.Error(), "unsupported python") {
			t.Errorf("%v: want an 'unsupported python ...' error, got %v", opts, err)
		}
	}
}

// execScript writes a stand-in for pulumi-language-python-exec that records
// its arguments and the config the host passes, then exits with code.
func execScript(t *testing.T, code int) (script, record string) {
	dir := t.TempDir()
	script, record = filepath.Join(dir, "exec.py"), filepath.Join(dir, "record.json")
	body := fmt.Sprintf(`import json, os, sys
json.dump({"argv": sys.argv[1:], "config": os.environ["PULUMI_CONFIG"],
           "secret_keys": os.environ["PULUMI_CONFIG_SECRET_KEYS"], "prefix": sys.prefix},
          open(%q, "w"))
sys.exit(%d)
`, record, code)
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	return script, record
}

func TestRunHandsTheProgramToTheExecScript(t *testing.T) {
	root := project(t)
	script, record := execScript(t, 0)
	h := &host{execScript: script, engineAddress: "127.0.0.1:1"}
	resp, err := h.Run(context.Background(), &pulumirpc.RunRequest{
		Info:             info(t, root, map[string]any{"virtualenv": "venv"}),
		MonitorAddress:   "127.0.0.1:2",
		Project:          "microcloud",
		Stack:            "dev",
		Pwd:              root,
		DryRun:           true,
		Parallel:         8,
		Organization:     "organization",
		Config:           map[string]string{"microcloud:config": `{"a":1}`},
		ConfigSecretKeys: []string{"microcloud:secret"},
	})
	if err != nil || resp.GetError() != "" || resp.GetBail() {
		t.Fatalf("Run: %v %v", err, resp)
	}
	var got struct {
		Argv       []string `json:"argv"`
		Config     string   `json:"config"`
		SecretKeys string   `json:"secret_keys"`
		Prefix     string   `json:"prefix"`
	}
	raw, err := os.ReadFile(record)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(raw, &got); err != nil {
		t.Fatal(err)
	}
	want := []string{
		"--monitor", "127.0.0.1:2", "--engine", "127.0.0.1:1", "--project", "microcloud", "--stack", "dev",
		"--pwd", root, "--dry_run", "true", "--parallel", "8", "--organization", "organization",
		"--root_directory", root, ".",
	}
	if !reflect.DeepEqual(got.Argv, want) {
		t.Errorf("exec script argv = %q\nwant %q", got.Argv, want)
	}
	if got.Config != `{"microcloud:config":"{\"a\":1}"}` || got.SecretKeys != `["microcloud:secret"]` {
		t.Errorf("PULUMI_CONFIG=%s PULUMI_CONFIG_SECRET_KEYS=%s", got.Config, got.SecretKeys)
	}
	// The program runs in the project's virtualenv, not the system Python.
	if want := filepath.Join(root, "venv"); got.Prefix != want {
		t.Errorf("sys.prefix = %s, want %s", got.Prefix, want)
	}
}

func TestRunExitCodes(t *testing.T) {
	root := project(t)
	for _, c := range []struct {
		code      int
		bail      bool
		errSubstr string
	}{{32, true, ""}, {3, false, "non-zero exit code: 3"}} {
		script, _ := execScript(t, c.code)
		h := &host{execScript: script}
		resp, err := h.Run(context.Background(), &pulumirpc.RunRequest{
			Info: info(t, root, map[string]any{"virtualenv": "venv"}), Pwd: root,
		})
		if err != nil {
			t.Fatal(err)
		}
		if resp.GetBail() != c.bail || !strings.Contains(resp.GetError(), c.errSubstr) || (c.errSubstr == "") != (resp.GetError() == "") {
			t.Errorf("exit %d: bail=%v error=%q", c.code, resp.GetBail(), resp.GetError())
		}
	}
}

// runPluginServer records what RunPlugin streams back.
type runPluginServer struct {
	pulumirpc.LanguageRuntime_RunPluginServer
	ctx  context.Context
	mu   sync.Mutex
	out  strings.Builder
	err  strings.Builder
	code []int32
}

func (s *runPluginServer) Context() context.Context { return s.ctx }

func (s *runPluginServer) Send(r *pulumirpc.RunPluginResponse) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch o := r.GetOutput().(type) {
	case *pulumirpc.RunPluginResponse_Stdout:
		s.out.Write(o.Stdout)
	case *pulumirpc.RunPluginResponse_Stderr:
		s.err.Write(o.Stderr)
	case *pulumirpc.RunPluginResponse_Exitcode:
		s.code = append(s.code, o.Exitcode)
	}
	return nil
}

// A policy pack is a Python plugin: its __main__.py runs in the virtualenv it
// names, in the working directory and environment the CLI gives, with the
// CLI's arguments; its output and exit code come back over the stream.
func TestRunPluginRunsTheDirectorysMainInItsVirtualenv(t *testing.T) {
	root := project(t)
	pack := t.TempDir()
	work := t.TempDir()
	main := "import os, sys\n" +
		"print('prefix', sys.prefix)\nprint('args', sys.argv[1:])\nprint('cwd', os.getcwd())\n" +
		"print('env', os.environ.get('MICROCLOUD_TEST_ENV'))\nprint('oops', file=sys.stderr)\nsys.exit(3)\n"
	if err := os.WriteFile(filepath.Join(pack, "__main__.py"), []byte(main), 0o644); err != nil {
		t.Fatal(err)
	}
	venv := filepath.Join(root, "venv")
	srv := &runPluginServer{ctx: context.Background()}
	err := (&host{}).RunPlugin(&pulumirpc.RunPluginRequest{
		Pwd:  work,
		Args: []string{"127.0.0.1:1234", "--flag"},
		Env:  []string{"MICROCLOUD_TEST_ENV=yes"},
		Info: info(t, pack, map[string]any{"virtualenv": venv}),
	}, srv)
	if err != nil {
		t.Fatal(err)
	}
	out := srv.out.String()
	for _, want := range []string{
		"prefix " + venv + "\n",
		"args ['127.0.0.1:1234', '--flag']\n",
		"cwd " + work + "\n",
		"env yes\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("stdout lacks %q:\n%s", want, out)
		}
	}
	if srv.err.String() != "oops\n" {
		t.Errorf("stderr = %q", srv.err.String())
	}
	if !reflect.DeepEqual(srv.code, []int32{3}) {
		t.Errorf("exit codes sent = %v, want [3] once, last", srv.code)
	}

	// A directory without __main__.py is an error, not a silent exit 0.
	empty := t.TempDir()
	srv = &runPluginServer{ctx: context.Background()}
	err = (&host{}).RunPlugin(&pulumirpc.RunPluginRequest{Pwd: work, Info: info(t, empty, map[string]any{"virtualenv": venv})}, srv)
	if err == nil || !strings.Contains(err.Error(), "no __main__.py") {
		t.Fatalf("err = %v", err)
	}
}
