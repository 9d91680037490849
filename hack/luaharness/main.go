// Command lua-harness evaluates an Argo CD resource health check (a health.lua script) against a
// Kubernetes object the way Argo CD v3.5 does it in util/lua/lua.go, so that a health check can
// be tested without running Argo CD:
//
//   - the object is read as YAML or JSON with sigs.k8s.io/yaml into a map, as Argo CD's own
//     health tests do (YAML 1.1: an unquoted key or value such as n, y, no or on is a boolean),
//     and converted to Lua tables by decodeValue (copied from Argo CD; numbers
//     become Lua numbers, JSON nulls nil), then exposed as the global `obj`; `actionParams` is
//     an empty table;
//   - the Lua state has the standard libraries only with -open-libs (Argo CD's built-in scripts,
//     and overrides with resource.customizations.useOpenLibs.<group_kind>: true); otherwise, as
//     for a plain override in argocd-cm, only the package, base and table libraries and the
//     'safe' os library (os.time, os.date via require("os")) are there; with -open-libs all of
//     gopher-lua's libraries are, io and the full os included, exactly as in Argo CD;
//   - the script has one second to run (the same context timeout);
//   - the returned table is encoded with layeh.com/gopher-json and decoded into
//     {status, message}; a status outside Healthy, Progressing, Degraded, Suspended, Missing,
//     Unknown becomes Unknown with Argo CD's "Lua returned an invalid health status", and an
//     empty table or a wrongly typed field gives an empty status, as in Argo CD.
//
// Usage:
//
//	lua-harness eval [-open-libs] [-raw] SCRIPT OBJECT
//	    prints the health status as JSON ({"status": ..., "message": ...}); -raw prints the
//	    table the script returned instead. Exit 1 when the script fails.
//	lua-harness test [-open-libs] [-script FILE] DIR|health_test.yaml
//	    runs every case of an Argo CD health_test.yaml (tests: [{healthStatus: {status,
//	    message}, inputPath}], input paths relative to the file) against DIR/health.lua (or
//	    FILE), printing each case; exit 1 on any mismatch or error.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	lua "github.com/yuin/gopher-lua"
	luajson "layeh.com/gopher-json"
	"sigs.k8s.io/yaml"
)

// HealthStatus mirrors gitops-engine's health.HealthStatus (same JSON names and omitempty).
type HealthStatus struct {
	Status  string `json:"status,omitempty"`
	Message string `json:"message,omitempty"`
}

const invalidHealthStatus = "Lua returned an invalid health status"

var validStatusCodes = map[string]bool{
	"Unknown": true, "Progressing": true, "Suspended": true, "Healthy": true, "Degraded": true,
	"Missing": true,
}

// runLua follows Argo CD's VM.runLuaWithResourceActionParameters (without action parameters).
// The caller closes the returned state.
func runLua(obj map[string]any, script string, useOpenLibs bool) (*lua.LState, error) {
	l := lua.NewState(lua.Options{
		SkipOpenLibs: !useOpenLibs,
	})
	for _, pair := range []struct {
		n string
		f lua.LGFunction
	}{
		{lua.LoadLibName, lua.OpenPackage},
		{lua.BaseLibName, lua.OpenBase},
		{lua.TabLibName, lua.OpenTable},
		{lua.OsLibName, OpenSafeOs},
	} {
		if err := l.CallByParam(lua.P{
			Fn:      l.NewFunction(pair.f),
			NRet:    0,
			Protect: true,
		}, lua.LString(pair.n)); err != nil {
			panic(err)
		}
	}
	l.PreloadModule(lua.OsLibName, SafeOsLoader)

	ctx, cancel := context.WithTimeout(context.Background(), 1*time.Second)
	defer cancel()
	l.SetContext(ctx)

	l.SetGlobal("actionParams", l.CreateTable(0, 0))
	l.SetGlobal("obj", decodeValue(l, obj))
	err := l.DoString(script)

	var apiErr *lua.ApiError
	if errors.As(err, &apiErr) {
		if apiErr.Type == lua.ApiErrorRun {
			apiErr.StackTrace = ""
			err = apiErr
		}
	}
	return l, err
}

// returnedValue runs the script and returns what it left on the stack, as Argo CD reads it.
func returnedValue(obj map[string]any, script string, useOpenLibs bool) (lua.LValue, error) {
	l, err := runLua(obj, script, useOpenLibs)
	defer l.Close()
	if err != nil {
		return nil, err
	}
	return l.Get(-1), nil
}

// executeHealthLua follows Argo CD's VM.ExecuteHealthLua.
func executeHealthLua(obj map[string]any, script string, useOpenLibs bool) (*HealthStatus, error) {
	returnValue, err := returnedValue(obj, script, useOpenLibs)
	if err != nil {
		return nil, err
	}
	if returnValue.Type() == lua.LTTable {
		jsonBytes, err := luajson.Encode(returnValue)
		if err != nil {
			return nil, err
		}
		healthStatus := &HealthStatus{}
		err = json.Unmarshal(jsonBytes, healthStatus)
		if err != nil {
			// An empty table is encoded as [] (and Argo CD's check matches any type error).
			var typeError *json.UnmarshalTypeError
			if errors.As(err, &typeError) {
				return &HealthStatus{}, nil
			}
			return nil, err
		}
		if !validStatusCodes[healthStatus.Status] {
			return &HealthStatus{Status: "Unknown", Message: invalidHealthStatus}, nil
		}
		return healthStatus, nil
	} else if returnValue.Type() == lua.LTNil {
		return &HealthStatus{}, nil
	}
	return nil, fmt.Errorf("expect table output from Lua script, not %s", returnValue.Type().String())
}

// decodeValue is Argo CD's (util/lua/lua.go), itself taken from layeh.com/gopher-json.
func decodeValue(l *lua.LState, value any) lua.LValue {
	switch converted := value.(type) {
	case bool:
		return lua.LBool(converted)
	case float64:
		return lua.LNumber(converted)
	case string:
		return lua.LString(converted)
	case json.Number:
		return lua.LString(converted)
	case int:
		return lua.LNumber(converted)
	case int32:
		return lua.LNumber(converted)
	case int64:
		return lua.LNumber(converted)
	case []any:
		arr := l.CreateTable(len(converted), 0)
		for _, item := range converted {
			arr.Append(decodeValue(l, item))
		}
		return arr
	case map[string]any:
		tbl := l.CreateTable(0, len(converted))
		for key, item := range converted {
			tbl.RawSetH(lua.LString(key), decodeValue(l, item))
		}
		return tbl
	case nil:
		return lua.LNil
	}
	return lua.LNil
}

// readObject reads a YAML or JSON object the way Argo CD's health tests do (getObj).
func readObject(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	obj := make(map[string]any)
	if err := yaml.Unmarshal(data, &obj); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return obj, nil
}

func eval(args []string, stdout io.Writer) int {
	flags := flag.NewFlagSet("eval", flag.ContinueOnError)
	openLibs := flags.Bool("open-libs", false, "open Lua's standard libraries (useOpenLibs)")
	raw := flags.Bool("raw", false, "print the returned table itself, not the health status")
	if err := flags.Parse(args); err != nil || flags.NArg() != 2 {
		fmt.Fprintln(os.Stderr, "usage: lua-harness eval [-open-libs] [-raw] SCRIPT OBJECT")
		return 2
	}
	script, err := os.ReadFile(flags.Arg(0))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	obj, err := readObject(flags.Arg(1))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var out []byte
	if *raw {
		value, err := returnedValue(obj, string(script), *openLibs)
		if err == nil {
			out, err = luajson.Encode(value)
		}
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	} else {
		status, err := executeHealthLua(obj, string(script), *openLibs)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		out, _ = json.Marshal(status)
	}
	fmt.Fprintln(stdout, string(out))
	return 0
}

type healthTests struct {
	Tests []struct {
		InputPath    string       `json:"inputPath"`
		HealthStatus HealthStatus `json:"healthStatus"`
	} `json:"tests"`
}

func test(args []string, stdout io.Writer) int {
	flags := flag.NewFlagSet("test", flag.ContinueOnError)
	openLibs := flags.Bool("open-libs", false, "open Lua's standard libraries (useOpenLibs)")
	scriptPath := flags.String("script", "", "the script (default: health.lua next to the tests)")
	if err := flags.Parse(args); err != nil || flags.NArg() != 1 {
		fmt.Fprintln(os.Stderr,
			"usage: lua-harness test [-open-libs] [-script FILE] DIR|health_test.yaml")
		return 2
	}
	testsPath := flags.Arg(0)
	if info, err := os.Stat(testsPath); err == nil && info.IsDir() {
		testsPath = filepath.Join(testsPath, "health_test.yaml")
	}
	dir := filepath.Dir(testsPath)
	if *scriptPath == "" {
		*scriptPath = filepath.Join(dir, "health.lua")
	}
	script, err := os.ReadFile(*scriptPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	data, err := os.ReadFile(testsPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	var suite healthTests
	if err := yaml.Unmarshal(data, &suite); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", testsPath, err)
		return 2
	}
	if len(suite.Tests) == 0 {
		fmt.Fprintf(os.Stderr, "%s: no tests\n", testsPath)
		return 1
	}
	failed := 0
	for _, tc := range suite.Tests {
		want, _ := json.Marshal(tc.HealthStatus)
		obj, err := readObject(filepath.Join(dir, tc.InputPath))
		var got *HealthStatus
		if err == nil {
			got, err = executeHealthLua(obj, string(script), *openLibs)
		}
		switch {
		case err != nil:
			failed++
			fmt.Fprintf(stdout, "FAIL %s: want %s, error: %v\n", tc.InputPath, want, err)
		case *got != tc.HealthStatus:
			failed++
			gotJSON, _ := json.Marshal(got)
			fmt.Fprintf(stdout, "FAIL %s: want %s, got %s\n", tc.InputPath, want, gotJSON)
		default:
			fmt.Fprintf(stdout, "ok   %s: %s\n", tc.InputPath, want)
		}
	}
	fmt.Fprintf(stdout, "%d passed, %d failed (%s)\n", len(suite.Tests)-failed, failed, testsPath)
	if failed > 0 {
		return 1
	}
	return 0
}

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: lua-harness eval|test ... (see -h of each)")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "eval":
		os.Exit(eval(os.Args[2:], os.Stdout))
	case "test":
		os.Exit(test(os.Args[2:], os.Stdout))
	default:
		fmt.Fprintf(os.Stderr, "unknown command %q: eval or test\n", os.Args[1])
		os.Exit(2)
	}
}
