package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const sample = `---
language: config-server   # the zip is config-server_buildpack-...
stack: cflinuxfs4
default_versions:
- name: config-server
  version: 0.0.1
dependencies:
  - name: config-server
    version: "0.0.1"
    uri: https://user:secret@example.com/a/config-server-v0.0.1.tgz
    sha256: abc
    cf_stacks: [cflinuxfs3, 'cflinuxfs4']
    file: dependencies/x/config-server-v0.0.1.tgz
include_files:
- manifest.yml
- bin/supply
`

func TestManifestSubsetParses(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "manifest.yml"), []byte(sample), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := loadManifest(dir)
	if err != nil {
		t.Fatal(err)
	}
	if m.Language != "config-server" || m.Stack != "cflinuxfs4" || len(m.Defaults) != 1 {
		t.Fatalf("top level read wrongly: %+v", m)
	}
	d := m.Dependencies[0]
	if d.Version != "0.0.1" || d.SHA256 != "abc" || d.File != "dependencies/x/config-server-v0.0.1.tgz" ||
		strings.Join(d.CFStacks, ",") != "cflinuxfs3,cflinuxfs4" {
		t.Fatalf("dependency read wrongly: %+v", d)
	}
}

func TestStackAndDefaults(t *testing.T) {
	m := &manifest{Defaults: []dependency{{Name: "config-server", Version: "1"}},
		Dependencies: []dependency{{Name: "config-server", Version: "1", CFStacks: []string{"cflinuxfs4"}}}}
	if err := m.checkStackSupport("cflinuxfs4"); err != nil {
		t.Fatal(err)
	}
	if err := m.checkStackSupport("other"); err == nil || err.Error() != "required stack other was not found" {
		t.Fatalf("got %v", err)
	}
	m.Stack = "cflinuxfs3"
	if err := m.checkStackSupport("cflinuxfs4"); err == nil {
		t.Fatal("a stack-specific package accepted another stack")
	}
	m.Stack = ""
	m.Defaults = append(m.Defaults, dependency{Name: "config-server", Version: "2"})
	if _, err := m.defaultDependency("config-server", "cflinuxfs4"); err == nil ||
		err.Error() != "found 2 default versions for config-server" {
		t.Fatalf("got %v", err)
	}
	m.Defaults = []dependency{{Name: "config-server", Version: "2"}}
	if _, err := m.defaultDependency("config-server", "cflinuxfs4"); err == nil ||
		err.Error() != "dependency config-server 2 not found" {
		t.Fatalf("got %v", err)
	}
	if _, err := m.defaultDependency("other", "cflinuxfs4"); err == nil || err.Error() != "no default version for other" {
		t.Fatalf("got %v", err)
	}
}

func TestRedact(t *testing.T) {
	if got := redact("https://user:pw@host/x.tgz"); got != "https://-redacted-:-redacted-@host/x.tgz" {
		t.Fatal(got)
	}
	if got := redact("https://host/x.tgz"); got != "https://host/x.tgz" {
		t.Fatal(got)
	}
}

func TestChecksumOfAMissingFileFails(t *testing.T) {
	if err := checkSha256(filepath.Join(t.TempDir(), "missing"), "x"); err == nil {
		t.Fatal("a missing file passed the checksum")
	}
}
