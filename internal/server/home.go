package server

import (
	"bytes"
	"html/template"
	"net/http"

	"github.com/herald-im/herald/internal/api"
	"github.com/herald-im/herald/internal/console"
	"github.com/herald-im/herald/proto"
)

// home answers GET /: what this server is, and where to go from here. A
// browser that lands on the address sees a page, not a bare 404; nothing
// in it is secret (the paths are in the docs), so it needs no login.
var home = template.Must(template.New("home").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Herald</title>
<link rel="stylesheet" href="{{.Console}}static/console.css">
</head>
<body>
<header><span class="brand">Herald</span></header>
<main>
<h1>Herald</h1>
<p>This is a <strong>Herald</strong> server: a self-hosted instant-messaging server with offline push
(APNs, FCM, Huawei Push Kit, Web Push).</p>
<ul id="links">
  <li><a href="{{.Console}}">The web console</a>: users, groups, messages, push debugging, live charts. Log in
    with an admin token (<code>herald gentoken --admin</code> on the server).</li>
  <li><a href="{{.OpenAPI}}">The server API's OpenAPI document</a>, for app backends.</li>
  <li>Apps connect to the WebSocket at <code>{{.WS}}</code> with a login token their backend mints.</li>
  <li>Health: <a href="/healthz">/healthz</a> (the process serves), <a href="/readyz">/readyz</a> (ready for traffic).</li>
</ul>
<p>The documentation comes with the source and each release, in its <code>docs/</code> folder:
<code>README.md</code> to install and run, <code>docs/protocol.md</code> (the client protocol), <code>docs/api.md</code>
(the server API), <code>docs/push.md</code>, <code>docs/configuration.md</code> and <code>docs/operations.md</code>.</p>
</main>
</body>
</html>
`))

func (s *Server) home(w http.ResponseWriter, r *http.Request) {
	var buf bytes.Buffer
	if err := home.Execute(&buf, map[string]string{"Console": console.Prefix, "OpenAPI": api.PathOpenAPI, "WS": proto.Path}); err != nil {
		s.log.Error("rendering the home page failed", "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Content-Security-Policy", "default-src 'self'; frame-ancestors 'none'; base-uri 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	w.Write(buf.Bytes())
}
