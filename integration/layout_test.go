package integration

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/stratalog/strata"

// TestDependencyDirection keeps the architecture's import rules true (ARCHITECTURE.md):
// Raft and Pebble only under metastore/, the AWS SDK only in the S3 store and lambdas/,
// nothing but cmd/ and integration/ imports agent or lambdas, nothing imports cmd, and objectlog depends on nothing of ours but
// itself.
func TestDependencyDirection(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Imports \" \"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	deps, err := exec.Command("go", "list", "-f", "{{.ImportPath}} {{join .Deps \" \"}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	imports := parse(string(out))
	transitive := parse(string(deps))
	if len(imports) == 0 {
		t.Fatal("go list found no packages")
	}

	under := func(pkg, dir string) bool {
		p := module + "/" + dir
		return pkg == p || strings.HasPrefix(pkg, p+"/")
	}
	for pkg, imps := range imports {
		for _, imp := range imps {
			// agent and lambdas are leaves: only the binary (wiring) and the
			// cross-process tests may import them; nothing imports cmd.
			for _, leaf := range []string{"agent", "lambdas", "cmd"} {
				wiring := leaf != "cmd" && (under(pkg, "cmd") || under(pkg, "integration"))
				if under(imp, leaf) && !under(pkg, leaf) && !wiring {
					t.Errorf("%s imports %s: nothing may import %s/", pkg, imp, leaf)
				}
			}
			if under(pkg, "objectlog") && strings.HasPrefix(imp, module+"/") && !under(imp, "objectlog") {
				t.Errorf("%s imports %s: objectlog depends on nothing else of ours", pkg, imp)
			}
		}
	}
	for pkg, ds := range transitive {
		for _, d := range ds {
			switch {
			case (strings.HasPrefix(d, "github.com/hashicorp/raft") || strings.HasPrefix(d, "github.com/cockroachdb/pebble")) &&
				!under(pkg, "metastore") && !under(pkg, "cmd") && !under(pkg, "integration"):
				t.Errorf("%s depends on %s: Raft and Pebble belong under metastore/", pkg, d)
			case strings.HasPrefix(d, "github.com/aws/aws-sdk-go-v2") &&
				!under(pkg, "objectlog/objstore/s3store") && !under(pkg, "objectlog/objstore/storeurl") &&
				!under(pkg, "lambdas") && !under(pkg, "cmd") && !under(pkg, "integration"):
				t.Errorf("%s depends on %s: the AWS SDK belongs to the S3 store and lambdas/", pkg, d)
			}
		}
	}
}

func parse(s string) map[string][]string {
	m := map[string][]string{}
	for line := range strings.Lines(s) {
		f := strings.Fields(line)
		if len(f) > 0 {
			m[f[0]] = f[1:]
		}
	}
	return m
}
