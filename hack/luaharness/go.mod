module flashgate.dev/luaharness

go 1.24

// The versions Argo CD v3.5.1 requires (its go.mod), so that scripts run on the same Lua VM.
require (
	github.com/yuin/gopher-lua v1.1.2
	layeh.com/gopher-json v0.0.0-20190114024228-97fed8db8427
	sigs.k8s.io/yaml v1.6.0
)

// sigs.k8s.io/yaml parses with this; Argo CD v3.5.1 selects v2.4.4.
require go.yaml.in/yaml/v2 v2.4.4 // indirect
