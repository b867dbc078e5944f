// bin/supply of the config-server sidecar buildpack.
//
//	bin/supply BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX
//
// Installs the config-server dependency named in the buildpack's manifest.yml the way
// libbuildpack's installer does (the same steps and the same texts), into DEPS_DIR/DEPS_IDX/bin,
// and declares the sidecar in DEPS_DIR/DEPS_IDX/launch.yml so apps need no `sidecars:` block.
// Compiled for linux at packaging time, standard library only: it runs on any stack.
package main

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	dependencyName = "config-server"
	// The sidecar's memory, carved out of the web process's memory (MB).
	sidecarMemoryMB = 64
)

type dependency struct {
	Name, Version, URI, SHA256, File string
	CFStacks                         []string
}

type manifest struct {
	Language, Stack string
	Defaults        []dependency
	Dependencies    []dependency
	dir             string
}

func main() {
	if len(os.Args) != 5 {
		fmt.Fprintln(os.Stderr, "usage: bin/supply BUILD_DIR CACHE_DIR DEPS_DIR DEPS_IDX")
		os.Exit(1)
	}
	if err := supply(os.Args[3], os.Args[4]); err != nil {
		logError("%s", err)
		os.Exit(14)
	}
}

func beginStep(format string, args ...any) { fmt.Printf("-----> "+format+"\n", args...) }
func info(format string, args ...any)      { fmt.Printf("       "+format+"\n", args...) }
func logError(format string, args ...any) {
	fmt.Printf("       **ERROR** "+format+"\n", args...)
}

type stackError struct{ err error }

func (e stackError) Error() string { return "Stack not supported by buildpack: " + e.err.Error() }

func supply(depsDir, depsIdx string) error {
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	buildpackDir := filepath.Dir(filepath.Dir(exe))
	m, err := loadManifest(buildpackDir)
	if err != nil {
		return err
	}
	stack := os.Getenv("CF_STACK")
	if err := m.checkStackSupport(stack); err != nil {
		return stackError{err}
	}
	dep, err := m.defaultDependency(dependencyName, stack)
	if err != nil {
		return err
	}
	depDir := filepath.Join(depsDir, depsIdx)
	beginStep("Installing %s %s", dep.Name, dep.Version)
	if err := install(m, dep, depDir); err != nil {
		return err
	}
	version, _ := os.ReadFile(filepath.Join(buildpackDir, "VERSION"))
	config := fmt.Sprintf("name: %s\nconfig: {}\nversion: %q\n", m.Language, strings.TrimSpace(string(version)))
	if err := os.WriteFile(filepath.Join(depDir, "config.yml"), []byte(config), 0o644); err != nil {
		return err
	}
	launch := fmt.Sprintf(`processes:
- type: %s
  command: %s
  limits:
    memory: %d
  platforms:
    cloudfoundry:
      sidecar_for: [web]
`, dependencyName, dependencyName, sidecarMemoryMB)
	if err := os.WriteFile(filepath.Join(depDir, "launch.yml"), []byte(launch), 0o644); err != nil {
		return err
	}
	info("Declared the %s sidecar for the web process (%d MB) in launch.yml", dependencyName, sidecarMemoryMB)
	return nil
}

// ---------------------------------------------------------------------------- the manifest

func loadManifest(dir string) (*manifest, error) {
	data, err := os.ReadFile(filepath.Join(dir, "manifest.yml"))
	if err != nil {
		return nil, err
	}
	doc, err := parseYAML(string(data))
	if err != nil {
		return nil, fmt.Errorf("manifest.yml: %w", err)
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, errors.New("manifest.yml: the top level must be a mapping")
	}
	m := &manifest{Language: str(top["language"]), Stack: str(top["stack"]), dir: dir}
	for _, d := range list(top["default_versions"]) {
		entry, _ := d.(map[string]any)
		m.Defaults = append(m.Defaults, dependency{Name: str(entry["name"]), Version: str(entry["version"])})
	}
	for _, d := range list(top["dependencies"]) {
		entry, _ := d.(map[string]any)
		dep := dependency{Name: str(entry["name"]), Version: str(entry["version"]), URI: str(entry["uri"]),
			SHA256: str(entry["sha256"]), File: str(entry["file"])}
		for _, s := range list(entry["cf_stacks"]) {
			dep.CFStacks = append(dep.CFStacks, str(s))
		}
		m.Dependencies = append(m.Dependencies, dep)
	}
	return m, nil
}

func str(v any) string {
	s, _ := v.(string)
	return s
}

func list(v any) []any {
	l, _ := v.([]any)
	return l
}

// checkStackSupport: a top-level `stack:` (a stack-specific package) must be the app's stack;
// otherwise some dependency must list the app's stack in its cf_stacks.
func (m *manifest) checkStackSupport(stack string) error {
	if m.Stack != "" {
		if m.Stack == stack {
			return nil
		}
	} else {
		if len(m.Dependencies) == 0 {
			return nil
		}
		for _, d := range m.Dependencies {
			for _, s := range d.CFStacks {
				if s == stack {
					return nil
				}
			}
		}
	}
	return fmt.Errorf("required stack %s was not found", stack)
}

func (m *manifest) defaultDependency(name, stack string) (dependency, error) {
	var found []dependency
	for _, d := range m.Defaults {
		if d.Name == name {
			found = append(found, d)
		}
	}
	switch len(found) {
	case 0:
		return dependency{}, fmt.Errorf("no default version for %s", name)
	case 1:
	default:
		return dependency{}, fmt.Errorf("found %d default versions for %s", len(found), name)
	}
	version := found[0].Version
	for _, d := range m.Dependencies {
		if d.Name != name || d.Version != version {
			continue
		}
		if m.Stack != "" {
			return d, nil
		}
		for _, s := range d.CFStacks {
			if s == stack {
				return d, nil
			}
		}
	}
	return dependency{}, fmt.Errorf("dependency %s %s not found", name, version)
}

// ----------------------------------------------------------------------- fetch and install

func install(m *manifest, dep dependency, depDir string) error {
	tmp, err := os.MkdirTemp("", "config-server-download")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	archive := filepath.Join(tmp, filepath.Base(dep.URI))
	if dep.File != "" {
		source := filepath.Join(m.dir, dep.File)
		info("Copy [%s]", source)
		if err := copyFile(source, archive); err != nil {
			return err
		}
	} else {
		info("Download [%s]", redact(dep.URI))
		if err := download(dep.URI, archive); err != nil {
			os.Remove(archive)
			return err
		}
	}
	if err := checkSha256(archive, dep.SHA256); err != nil {
		os.Remove(archive)
		return err
	}
	if err := os.MkdirAll(depDir, 0o755); err != nil {
		return err
	}
	if strings.HasSuffix(archive, ".tgz") || strings.HasSuffix(archive, ".tar.gz") {
		return extractTgz(archive, depDir)
	}
	return copyFile(archive, filepath.Join(depDir, "bin", filepath.Base(dep.URI)))
}

// redact hides the credentials of a URL the way libbuildpack prints it.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		return raw
	}
	u.User = url.UserPassword("-redacted-", "-redacted-")
	return u.String()
}

func download(uri, dest string) error {
	client := &http.Client{Timeout: 10 * time.Minute}
	resp, err := client.Get(uri)
	if err != nil {
		message := err.Error()
		if redacted := redact(uri); redacted != uri {
			message = strings.ReplaceAll(message, uri, redacted)
		}
		return fmt.Errorf("could not download: %s", message)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("could not download: %d", resp.StatusCode)
	}
	out, err := os.Create(dest)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		out.Close()
		return fmt.Errorf("could not download: %s", err)
	}
	return out.Close()
}

func checkSha256(path, expected string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return err
	}
	actual := hex.EncodeToString(h.Sum(nil))
	if actual != expected {
		return fmt.Errorf("dependency sha256 mismatch: expected sha256 %s, actual sha256 %s", expected, actual)
	}
	return nil
}

func copyFile(src, dest string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return err
	}
	out, err := os.OpenFile(dest, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func extractTgz(archive, dest string) error {
	f, err := os.Open(archive)
	if err != nil {
		return err
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s is not a gzipped tar archive: %w", filepath.Base(archive), err)
	}
	defer gz.Close()
	tr := tar.NewReader(gz)
	root := filepath.Clean(dest) + string(os.PathSeparator)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading %s: %w", filepath.Base(archive), err)
		}
		target := filepath.Join(dest, hdr.Name)
		if !strings.HasPrefix(target+string(os.PathSeparator), root) {
			return fmt.Errorf("%s: entry %q points outside the dependency directory", filepath.Base(archive), hdr.Name)
		}
		switch hdr.Typeflag {
		case tar.TypeDir:
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
		case tar.TypeReg:
			if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
				return err
			}
			out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(hdr.Mode)&0o777)
			if err != nil {
				return err
			}
			if _, err := io.Copy(out, tr); err != nil {
				out.Close()
				return err
			}
			if err := out.Close(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: entry %q is not a file or directory", filepath.Base(archive), hdr.Name)
		}
	}
}
