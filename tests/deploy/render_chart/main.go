// render_chart renders a Helm chart's templates the way `helm template` does, for the template
// functions the Crescent chart uses (Go's text/template plus include, dict, list, quote,
// nindent, indent, toString, add, trunc, trimSuffix from Helm and Sprig). The test runs it
// where no helm binary is available; a function the chart uses that is missing here fails the
// render, so the chart cannot quietly drift onto functions this check does not know.
//
//	go run ./render_chart CHART_DIR DATA_JSON
//
// DATA_JSON holds {"Values": ..., "Release": ..., "Chart": ...}. Prints each rendered manifest
// as "---\n# Source: <chart>/templates/<file>\n<text>".
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/template"
)

func strval(v interface{}) string {
	switch t := v.(type) {
	case string:
		return t
	case []byte:
		return string(t)
	case error:
		return t.Error()
	case fmt.Stringer:
		return t.String()
	case float64:
		if t == float64(int64(t)) {
			return fmt.Sprintf("%d", int64(t))
		}
		return fmt.Sprintf("%v", t)
	default:
		return fmt.Sprintf("%v", t)
	}
}

func toInt64(v interface{}) int64 {
	switch t := v.(type) {
	case int:
		return int64(t)
	case int64:
		return t
	case float64:
		return int64(t)
	default:
		var n int64
		fmt.Sscan(strval(v), &n)
		return n
	}
}

func indent(n int, s string) string {
	pad := strings.Repeat(" ", n)
	return pad + strings.ReplaceAll(s, "\n", "\n"+pad)
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: render_chart CHART_DIR DATA_JSON")
		os.Exit(2)
	}
	chart, dataPath := os.Args[1], os.Args[2]
	raw, err := os.ReadFile(dataPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	var data map[string]interface{}
	if err := json.Unmarshal(raw, &data); err != nil {
		fmt.Fprintln(os.Stderr, "data:", err)
		os.Exit(1)
	}
	root := template.New("chart").Option("missingkey=zero")
	funcs := template.FuncMap{
		"include": func(name string, d interface{}) (string, error) {
			var b strings.Builder
			err := root.ExecuteTemplate(&b, name, d)
			return b.String(), err
		},
		"dict": func(kv ...interface{}) map[string]interface{} {
			m := map[string]interface{}{}
			for i := 0; i+1 < len(kv); i += 2 {
				m[strval(kv[i])] = kv[i+1]
			}
			return m
		},
		"list": func(items ...interface{}) []interface{} { return items },
		"quote": func(vs ...interface{}) string {
			out := []string{}
			for _, v := range vs {
				if v != nil {
					out = append(out, fmt.Sprintf("%q", strval(v)))
				}
			}
			return strings.Join(out, " ")
		},
		"nindent":  func(n int, s string) string { return "\n" + indent(n, s) },
		"indent":   indent,
		"toString": strval,
		"add": func(vs ...interface{}) int64 {
			var s int64
			for _, v := range vs {
				s += toInt64(v)
			}
			return s
		},
		"trunc": func(n int, s string) string {
			if len(s) > n {
				return s[:n]
			}
			return s
		},
		"trimSuffix": func(suffix, s string) string { return strings.TrimSuffix(s, suffix) },
	}
	root.Funcs(funcs)
	files, _ := filepath.Glob(filepath.Join(chart, "templates", "*"))
	sort.Strings(files)
	name := filepath.Base(chart)
	var manifests []string
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		tname := name + "/templates/" + filepath.Base(f)
		if _, err := root.New(tname).Parse(string(text)); err != nil {
			fmt.Fprintln(os.Stderr, "parse:", err)
			os.Exit(1)
		}
		if !strings.HasPrefix(filepath.Base(f), "_") && strings.HasSuffix(f, ".yaml") {
			manifests = append(manifests, tname)
		}
	}
	for _, m := range manifests {
		var b strings.Builder
		if err := root.ExecuteTemplate(&b, m, data); err != nil {
			fmt.Fprintln(os.Stderr, "render:", err)
			os.Exit(1)
		}
		fmt.Printf("---\n# Source: %s\n%s\n", m, b.String())
	}
}
