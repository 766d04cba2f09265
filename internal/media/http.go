package media

import (
	"encoding/json"

	"io"

	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// MaxChunkBytes is the largest PATCH body the server takes (each must
// declare its Content-Length): a chunk is read within one request's
// deadline, and a dropped connection costs at most one chunk's resend.
const MaxChunkBytes = 16 << 20

// chunkIdle is how long a chunk's body (or a download's answer) may
// stall before the request fails: the connection's deadlines move on with
// every read and write, so a slow but steady phone is not cut off by the
// server's HTTP read and write timeouts, which bound a whole request.
const chunkIdle = 30 * time.Second

// Handler serves the media HTTP API (proto.MediaUploadsPath and the paths
// under it, proto.MediaFilesPath).
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+proto.MediaUploadsPath, s.serveCreate)
	mux.HandleFunc("GET "+proto.MediaUploadPath+"{id}", s.serveStatus)
	mux.HandleFunc("HEAD "+proto.MediaUploadPath+"{id}", s.serveStatus)
	mux.HandleFunc("PATCH "+proto.MediaUploadPath+"{id}", s.serveChunk)
	mux.HandleFunc("DELETE "+proto.MediaUploadPath+"{id}", s.serveAbort)
	mux.HandleFunc("GET "+proto.MediaFilesPath+"{id}", s.serveDownload)
	mux.HandleFunc("HEAD "+proto.MediaFilesPath+"{id}", s.serveDownload)
	mux.HandleFunc("POST "+proto.MediaFilesPath+"{id}/url", s.serveURL)
	return mux
}

// errorBody is the JSON of a failed request.
type errorBody struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// fail answers err; an internal error is logged here, the edge, once.
func (s *Service) fail(w http.ResponseWriter, r *http.Request, err error) {
	code := herald.ErrorCode(err)
	if code == herald.CodeInternal {
		s.log.Error("media request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code.HTTPStatus())
	json.NewEncoder(w).Encode(errorBody{Code: string(code), Message: herald.ErrorMessage(err)})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// user authenticates r by its login token.
func (s *Service) user(r *http.Request) (string, error) {
	auth := r.Header.Get("Authorization")
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	if !ok || tok == "" {
		return "", herald.Errorf(herald.CodeUnauthorized, "the request needs the session's login token: Authorization: Bearer <token>")
	}
	claims, err := token.Verify(s.cfg.Secret, tok, s.cfg.Now())
	if err != nil {
		return "", err
	}
	s.authenticated(r)
	return claims.UserID, nil
}

func (s *Service) status(f herald.MediaFile) proto.UploadStatus {
	st := proto.UploadStatus{ID: f.ID, Kind: string(f.Kind), Name: f.Name, MIME: f.MIME, Size: f.Size,
		Offset: f.Received, Complete: f.Complete, ChunkBytes: MaxChunkBytes}
	if f.Complete {
		st.Media = &herald.Media{FileID: f.ID, Name: f.Name, Size: f.Size, MIME: f.MIME, SHA256: f.SHA256,
			Width: f.Width, Height: f.Height, Thumbnail: f.Thumb, ThumbWidth: f.ThumbW, ThumbHeight: f.ThumbH}
	}
	return st
}

func setOffset(w http.ResponseWriter, f herald.MediaFile) {
	w.Header().Set(proto.HeaderUploadOffset, strconv.FormatInt(f.Received, 10))
	w.Header().Set(proto.HeaderUploadLength, strconv.FormatInt(f.Size, 10))
}

func (s *Service) serveCreate(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	var req proto.CreateUploadRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 4<<10))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.fail(w, r, herald.Errorf(herald.CodeInvalidArgument, "body: not a JSON upload request (kind, name, mime, size): %v", err))
		return
	}
	kind, err := herald.ParseMediaKind(req.Kind)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := s.Create(r.Context(), user, NewUpload{Kind: kind, Name: req.Name, MIME: req.MIME, Size: req.Size})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	w.Header().Set("Location", proto.MediaUploadPath+f.ID)
	setOffset(w, f)
	writeJSON(w, http.StatusCreated, s.status(f))
}

func (s *Service) serveStatus(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := s.Upload(r.Context(), user, r.PathValue("id"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	setOffset(w, f)
	if r.Method == http.MethodHead {
		w.Header().Set("Cache-Control", "no-store")
		return
	}
	writeJSON(w, http.StatusOK, s.status(f))
}

func (s *Service) serveChunk(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if ct := r.Header.Get("Content-Type"); ct != proto.ContentTypeChunk {
		s.fail(w, r, herald.Errorf(herald.CodeInvalidArgument, "a chunk's Content-Type is %s, not %q", proto.ContentTypeChunk, ct))
		return
	}
	offset, err := strconv.ParseInt(r.Header.Get(proto.HeaderUploadOffset), 10, 64)
	if err != nil || offset < 0 {
		s.fail(w, r, herald.Errorf(herald.CodeInvalidArgument, "header %s must be the chunk's start offset (a number of bytes)", proto.HeaderUploadOffset))
		return
	}
	if r.ContentLength < 0 {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusLengthRequired)
		json.NewEncoder(w).Encode(errorBody{Code: string(herald.CodeInvalidArgument), Message: "a chunk must declare its Content-Length"})
		return
	}
	if r.ContentLength > MaxChunkBytes {
		s.fail(w, r, herald.Errorf(herald.CodeTooLarge, "a chunk is at most %d bytes; this one is %d", MaxChunkBytes, r.ContentLength))
		return
	}
	body := &idleReader{r: r.Body, rc: http.NewResponseController(w)}
	f, err := s.Write(r.Context(), user, r.PathValue("id"), offset, r.ContentLength, body)
	if err != nil {
		if f.ID != "" && !errorIs(err, herald.CodeNotFound) {
			setOffset(w, f) // where to resume
		}
		s.fail(w, r, err)
		return
	}
	setOffset(w, f)
	writeJSON(w, http.StatusOK, s.status(f))
}

// idleReader moves the connection's deadlines on before each read (the
// write deadline too: the answer follows the whole body).
type idleReader struct {
	r  io.Reader
	rc *http.ResponseController
}

func (i *idleReader) Read(p []byte) (int, error) {
	at := time.Now().Add(chunkIdle)
	_ = i.rc.SetReadDeadline(at)
	_ = i.rc.SetWriteDeadline(at.Add(chunkIdle))
	return i.r.Read(p)
}

// idleWriter moves the connection's write deadline on before each write
// of a download.
type idleWriter struct {
	http.ResponseWriter
	rc *http.ResponseController
}

func (i *idleWriter) Write(p []byte) (int, error) {
	_ = i.rc.SetWriteDeadline(time.Now().Add(chunkIdle))
	return i.ResponseWriter.Write(p)
}

func (s *Service) serveAbort(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if err := s.Abort(r.Context(), user, r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) serveURL(w http.ResponseWriter, r *http.Request) {
	user, err := s.user(r)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	id := r.PathValue("id")
	thumb := r.URL.Query().Get("thumbnail") == "1"
	f, err := s.Readable(r.Context(), user, id)
	if err == nil && thumb && !f.Thumb {
		err = herald.Errorf(herald.CodeNotFound, "file %q has no thumbnail", id)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	if p, ok := s.blobs.(Presigner); ok {
		// Straight to the store: its URL, its expiry.
		exp := s.cfg.Now().Add(s.cfg.URLTTL)
		blob, ctype, disp := id, "", ""
		if thumb {
			blob, ctype, disp = thumbID(id), "image/jpeg", dispositionOf(thumbName(f.Name), true)
		} else {
			var inline bool
			ctype, inline = servedType(f.MIME)
			disp = dispositionOf(f.Name, inline)
		}
		u, err := p.Presign(r.Context(), blob, s.cfg.URLTTL, ctype, disp)
		if err != nil {
			s.fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, proto.DownloadURL{URL: u, ExpiresAt: exp.UnixMilli()})
		return
	}
	q, exp := s.Sign(id, user, thumb)
	writeJSON(w, http.StatusOK, proto.DownloadURL{URL: proto.MediaFilesPath + url.PathEscape(id) + "?" + q, ExpiresAt: exp.UnixMilli()})
}

// serveDownload answers a download: with the login token, or with a
// signed URL's parameters (exp, u, sig). A signed URL is checked again
// against the file's readers, so a user who left a group cannot use a URL
// signed before.
func (s *Service) serveDownload(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	q := r.URL.Query()
	thumb := q.Get("thumbnail") == "1"
	var user string
	var err error
	if sig := q.Get("sig"); sig != "" {
		user = q.Get("u")
		if err = s.VerifySigned(id, user, q.Get("exp"), sig, thumb); err == nil {
			s.authenticated(r)
		}
	} else {
		user, err = s.user(r)
	}
	if err != nil {
		s.fail(w, r, err)
		return
	}
	f, err := s.Readable(r.Context(), user, id)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	b, err := s.Open(r.Context(), f, thumb)
	if err != nil {
		s.fail(w, r, err)
		return
	}
	defer b.Close()
	if startsFile(r) {
		s.stats.Downloads.Add(1)
	}
	w.Header().Set("Cache-Control", "private, max-age=3600")
	if !thumb && f.SHA256 != "" {
		w.Header().Set("ETag", `"`+f.SHA256+`"`)
	}
	ServeBlob(w, r, f, thumb, false, b)
}

// startsFile reports whether r reads a file from its start: a GET with no
// Range, or one whose first range begins at byte 0. A HEAD, and a resumed
// or seeking read of a file (a player's ranges, a download continued after
// a cut), are not a download of their own.
func startsFile(r *http.Request) bool {
	if r.Method != http.MethodGet {
		return false
	}
	rg := r.Header.Get("Range")
	return rg == "" || strings.HasPrefix(strings.TrimSpace(strings.TrimPrefix(rg, "bytes=")), "0-")
}

// ServeBlob answers a download of file f, or of its thumbnail, from b
// (which it does not close): its Content-Type and Content-Disposition,
// nosniff and a sandboxing Content-Security-Policy (a user's file never
// runs as a page of the server's origin), then the bytes, with ranges and
// conditional requests. Each write moves the connection's write deadline
// on, so the server's HTTP write timeout, which bounds a whole request,
// does not cut a slow but steady download. attachment serves the file as
// a download of bytes (application/octet-stream), whatever type its
// sender declared. Caching headers are the caller's.
func ServeBlob(w http.ResponseWriter, r *http.Request, f herald.MediaFile, thumb, attachment bool, b Blob) {
	name, ctype, inline := f.Name, "application/octet-stream", false
	switch {
	case thumb:
		name, ctype, inline = thumbName(name), "image/jpeg", true
	case !attachment:
		ctype, inline = servedType(f.MIME)
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("Content-Disposition", dispositionOf(name, inline))
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", "sandbox; default-src 'none'")
	http.ServeContent(&idleWriter{ResponseWriter: w, rc: http.NewResponseController(w)}, r, "", b.ModTime(), b)
}

func extOf(name string) string {
	if i := strings.LastIndexByte(name, '.'); i > 0 {
		return name[i:]
	}
	return ""
}

func (s *Service) authenticated(r *http.Request) {
	if s.cfg.Authenticated != nil {
		s.cfg.Authenticated(r)
	}
}

func thumbName(name string) string { return strings.TrimSuffix(name, extOf(name)) + ".thumb.jpg" }

// dispositionOf is the Content-Disposition of a download of name.
func dispositionOf(name string, inline bool) string {
	disp := "attachment"
	if inline {
		disp = "inline"
	}
	return mime.FormatMediaType(disp, map[string]string{"filename": name})
}
