package main

// A reader for the block-style YAML subset a buildpack manifest.yml uses: mappings, sequences
// (block "- " items and flow "[a, b]" lists), plain and quoted scalars, comments. The standard
// library has no YAML package, and bin/supply must run on the stack with nothing added to it.

import (
	"fmt"
	"strings"
)

type yamlLine struct {
	number int
	indent int
	text   string
}

func parseYAML(data string) (any, error) {
	var lines []yamlLine
	for i, raw := range strings.Split(strings.ReplaceAll(data, "\r\n", "\n"), "\n") {
		text := stripComment(raw)
		trimmed := strings.TrimSpace(text)
		if trimmed == "" || trimmed == "---" || trimmed == "..." {
			continue
		}
		if strings.Contains(text, "\t") && strings.TrimLeft(text, " \t") != strings.TrimLeft(text, " ") {
			return nil, fmt.Errorf("line %d: tabs cannot indent YAML", i+1)
		}
		indent := len(text) - len(strings.TrimLeft(text, " "))
		lines = append(lines, yamlLine{i + 1, indent, strings.TrimRight(text[indent:], " ")})
	}
	if len(lines) == 0 {
		return map[string]any{}, nil
	}
	p := &yamlParser{lines: lines}
	value, err := p.block(lines[0].indent)
	if err != nil {
		return nil, err
	}
	if p.pos < len(p.lines) {
		return nil, fmt.Errorf("line %d: unexpected indentation", p.lines[p.pos].number)
	}
	return value, nil
}

// stripComment drops a " #" comment that is not inside quotes.
func stripComment(line string) string {
	var quote rune
	for i, r := range line {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			quote = r
		case r == '#' && (i == 0 || line[i-1] == ' ' || line[i-1] == '\t'):
			return line[:i]
		}
	}
	return line
}

type yamlParser struct {
	lines []yamlLine
	pos   int
}

func (p *yamlParser) block(indent int) (any, error) {
	line := p.lines[p.pos]
	if line.text == "-" || strings.HasPrefix(line.text, "- ") {
		return p.sequence(indent)
	}
	return p.mapping(indent)
}

func (p *yamlParser) sequence(indent int) (any, error) {
	items := []any{}
	for p.pos < len(p.lines) {
		line := p.lines[p.pos]
		if line.indent != indent || !(line.text == "-" || strings.HasPrefix(line.text, "- ")) {
			break
		}
		rest := strings.TrimLeft(strings.TrimPrefix(line.text, "-"), " ")
		if rest == "" {
			p.pos++
			if p.pos >= len(p.lines) || p.lines[p.pos].indent <= indent {
				items = append(items, nil)
				continue
			}
			item, err := p.block(p.lines[p.pos].indent)
			if err != nil {
				return nil, err
			}
			items = append(items, item)
			continue
		}
		if _, _, isKey := splitKey(rest); isKey {
			// "- key: value" starts a mapping whose keys line up with "key".
			inner := indent + (len(line.text) - len(rest))
			p.lines[p.pos] = yamlLine{line.number, inner, rest}
			item, err := p.mapping(inner)
			if err != nil {
				return nil, err
			}
			items = append(items, item)
			continue
		}
		value, err := scalar(rest, line.number)
		if err != nil {
			return nil, err
		}
		items = append(items, value)
		p.pos++
	}
	return items, nil
}

func (p *yamlParser) mapping(indent int) (any, error) {
	result := map[string]any{}
	for p.pos < len(p.lines) {
		line := p.lines[p.pos]
		if line.indent < indent {
			break
		}
		if line.indent > indent {
			return nil, fmt.Errorf("line %d: unexpected indentation", line.number)
		}
		if line.text == "-" || strings.HasPrefix(line.text, "- ") {
			break
		}
		key, rest, ok := splitKey(line.text)
		if !ok {
			return nil, fmt.Errorf("line %d: expected `key: value`, found %q", line.number, line.text)
		}
		p.pos++
		if rest != "" {
			value, err := scalar(rest, line.number)
			if err != nil {
				return nil, err
			}
			result[key] = value
			continue
		}
		if p.pos < len(p.lines) {
			next := p.lines[p.pos]
			isItem := next.text == "-" || strings.HasPrefix(next.text, "- ")
			if next.indent > indent || (next.indent == indent && isItem) {
				value, err := p.block(next.indent)
				if err != nil {
					return nil, err
				}
				result[key] = value
				continue
			}
		}
		result[key] = nil
	}
	return result, nil
}

// splitKey splits "key: value" (or "key:") into its key and the rest.
func splitKey(text string) (string, string, bool) {
	if strings.HasPrefix(text, "[") || strings.HasPrefix(text, "{") {
		return "", "", false
	}
	var quote rune
	for i, r := range text {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '\'' || r == '"':
			if i == 0 {
				quote = r
			}
		case r == ':' && (i+1 == len(text) || text[i+1] == ' '):
			key := unquote(strings.TrimSpace(text[:i]))
			return key, strings.TrimSpace(text[i+1:]), key != ""
		}
	}
	return "", "", false
}

func scalar(text string, number int) (any, error) {
	switch {
	case text == "[]":
		return []any{}, nil
	case text == "{}":
		return map[string]any{}, nil
	case strings.HasPrefix(text, "["):
		if !strings.HasSuffix(text, "]") {
			return nil, fmt.Errorf("line %d: a flow list must end on its own line: %q", number, text)
		}
		items := []any{}
		for _, part := range strings.Split(text[1:len(text)-1], ",") {
			if part = strings.TrimSpace(part); part != "" {
				items = append(items, unquote(part))
			}
		}
		return items, nil
	case text == "~" || text == "null":
		return nil, nil
	}
	return unquote(text), nil
}

func unquote(text string) string {
	if len(text) >= 2 {
		if text[0] == '\'' && text[len(text)-1] == '\'' {
			return strings.ReplaceAll(text[1:len(text)-1], "''", "'")
		}
		if text[0] == '"' && text[len(text)-1] == '"' {
			return strings.ReplaceAll(strings.ReplaceAll(text[1:len(text)-1], `\"`, `"`), `\\`, `\`)
		}
	}
	return text
}
