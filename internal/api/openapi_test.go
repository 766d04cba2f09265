package api

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"testing"
)

// TestOpenAPIMatchesRoutes holds openapi.json and the mux together: every
// route served is documented and every documented operation is served.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(OpenAPI(), &doc); err != nil {
		t.Fatalf("openapi.json does not parse: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.1") {
		t.Errorf("openapi %q, want 3.1.x", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			switch method {
			case "get", "post", "put", "patch", "delete":
				documented = append(documented, strings.ToUpper(method)+" "+path)
			}
		}
	}
	h := New(Config{Secret: testSecret})
	served := []string{"GET " + PathOpenAPI, "GET " + PathPushMessage} // each served before authentication
	for _, rt := range h.routes() {
		served = append(served, rt.method+" "+rt.path)
	}
	sort.Strings(documented)
	sort.Strings(served)
	if strings.Join(documented, "\n") != strings.Join(served, "\n") {
		t.Errorf("documented operations:\n%s\n\nserved routes:\n%s", strings.Join(documented, "\n"), strings.Join(served, "\n"))
	}
	// And the mux really routes each documented operation.
	for _, op := range documented {
		method, path, _ := strings.Cut(op, " ")
		req := httptest.NewRequest(method, strings.ReplaceAll(path, "{user}", "bob"), nil)
		if path == PathOpenAPI || path == PathPushMessage {
			continue
		}
		if _, pattern := h.mux.Handler(req); pattern != method+" "+path {
			t.Errorf("%s routes to pattern %q", op, pattern)
		}
	}
}

func TestOpenAPIServedWithoutAuth(t *testing.T) {
	f := newFixture(t, nil)
	resp, err := http.Get(f.srv.URL + PathOpenAPI)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/json" || !json.Valid(body) {
		t.Fatalf("GET %s: %d %s, want 200 with the JSON document", PathOpenAPI, resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	resp, err = http.Post(f.srv.URL+PathOpenAPI, "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("POST %s: %d, want 405", PathOpenAPI, resp.StatusCode)
	}
}
