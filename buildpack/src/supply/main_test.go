package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
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

func writeTgz(t *testing.T, path string, entries map[string]string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz := gzip.NewWriter(f)
	tw := tar.NewWriter(gz)
	for name, body := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
}

func sha(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func TestInstallFromACachedFileUnpacksIntoTheDepsDir(t *testing.T) {
	bp := t.TempDir()
	archive := filepath.Join(bp, "dependencies", "x", "config-server-v1.tgz")
	if err := os.MkdirAll(filepath.Dir(archive), 0o755); err != nil {
		t.Fatal(err)
	}
	writeTgz(t, archive, map[string]string{"bin/config-server": "#!/bin/sh\n"})
	dep := dependency{Name: "config-server", Version: "1", URI: "https://h/config-server-v1.tgz",
		SHA256: sha(t, archive), File: "dependencies/x/config-server-v1.tgz"}
	depDir := filepath.Join(t.TempDir(), "0")
	if err := install(&manifest{dir: bp}, dep, depDir); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(depDir, "bin", "config-server"))
	if err != nil || info.Mode().Perm() != 0o755 {
		t.Fatalf("bin/config-server not installed executable: %v %v", info, err)
	}
	dep.SHA256 = strings.Repeat("0", 64)
	err = install(&manifest{dir: bp}, dep, filepath.Join(t.TempDir(), "1"))
	if err == nil || !strings.HasPrefix(err.Error(), "dependency sha256 mismatch: expected sha256 000") {
		t.Fatalf("got %v", err)
	}
}

func TestArchiveEntriesCannotLeaveTheDepsDir(t *testing.T) {
	archive := filepath.Join(t.TempDir(), "evil.tgz")
	writeTgz(t, archive, map[string]string{"../escaped": "x"})
	dest := filepath.Join(t.TempDir(), "deps", "0")
	err := extractTgz(archive, dest)
	if err == nil || !strings.Contains(err.Error(), "points outside the dependency directory") {
		t.Fatalf("got %v", err)
	}
	if _, statErr := os.Stat(filepath.Join(filepath.Dir(dest), "escaped")); statErr == nil {
		t.Fatal("an entry was written outside the deps dir")
	}
}
