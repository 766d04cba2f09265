package media

import (
	"mime"
	"net/http"
	"strings"

	"github.com/herald-im/herald"
)

// SniffLen is how many leading bytes the content type is detected from
// (http.DetectContentType's window). The first chunk of an upload must
// carry that many bytes, or the whole file when it is shorter.
const SniffLen = 512

// imageTypes are the image formats an image upload may have: the ones a
// thumbnail is made of.
var imageTypes = map[string]bool{"image/jpeg": true, "image/png": true, "image/gif": true, "image/webp": true}

// aliases maps content types that name one format to one name.
var aliases = map[string]string{
	"audio/wav": "audio/wave", "audio/x-wav": "audio/wave", "audio/vnd.wave": "audio/wave",
	"audio/mp3": "audio/mpeg", "audio/ogg": "application/ogg", "video/ogg": "application/ogg",
	"image/jpg": "image/jpeg", "audio/x-aiff": "audio/aiff", "audio/mid": "audio/midi",
	"audio/x-m4a": "audio/mp4", "audio/m4a": "audio/mp4",
}

// NormalizeMIME checks a declared content type and returns its bare,
// lower-case form ("image/jpeg" of "Image/JPEG; q=1").
func NormalizeMIME(declared string) (string, error) {
	t, _, err := mime.ParseMediaType(declared)
	if err != nil || !strings.Contains(t, "/") {
		return "", herald.Errorf(herald.CodeInvalidArgument, "mime %q is not a content type (type/subtype)", declared)
	}
	return t, nil
}

func canonical(t string) string {
	if a, ok := aliases[t]; ok {
		return a
	}
	return t
}

// checkType compares the declared type of an upload of kind with the
// type detected from its first bytes (sniffed, a DetectContentType
// result). An image must be one of the thumbnail formats, and be what it
// says. Other kinds: when the bytes are recognised as a specific format,
// the declaration must name it; bytes that are only "some binary" or
// "some text" do not contradict a declaration, except that text or binary
// cannot be declared as an image, audio or video format the detector
// knows.
func checkType(kind herald.MediaKind, declared, sniffed string) error {
	s, _, _ := mime.ParseMediaType(sniffed)
	d := canonical(declared)
	s = canonical(s)
	if kind == herald.KindImage {
		if !imageTypes[d] {
			return herald.Errorf(herald.CodeInvalidArgument, "an image upload must be JPEG, PNG, GIF or WebP, not %s; send it as a file", declared)
		}
		if s != d {
			return typeMismatch(declared, s)
		}
		return nil
	}
	switch s {
	case "application/octet-stream", "text/plain":
		if imageTypes[d] || strings.HasPrefix(d, "audio/") || strings.HasPrefix(d, "video/") {
			if known(d) {
				return typeMismatch(declared, s)
			}
		}
		return nil
	}
	if s == d {
		return nil
	}
	// text/html and text/xml are detected from markup inside other text:
	// a declared text or XML type is not contradicted by them.
	if (s == "text/html" || s == "text/xml") && (strings.HasPrefix(d, "text/") || strings.HasSuffix(d, "+xml") || strings.HasSuffix(d, "/xml") || d == "application/json") {
		return nil
	}
	if s == "application/zip" && (strings.HasPrefix(d, "application/vnd.") || strings.HasSuffix(d, "+zip") || d == "application/epub+zip" || d == "application/java-archive") {
		return nil // office documents, EPUB and JARs are ZIP files
	}
	return typeMismatch(declared, s)
}

// known reports whether the detector recognises format t: bytes it calls
// binary cannot be t.
func known(t string) bool {
	switch t {
	case "image/jpeg", "image/png", "image/gif", "image/webp", "image/bmp",
		"audio/mpeg", "audio/wave", "audio/aiff", "audio/basic", "audio/midi", "application/ogg",
		"video/mp4", "video/webm", "video/avi":
		return true
	}
	return false
}

func typeMismatch(declared, sniffed string) error {
	return herald.Errorf(herald.CodeInvalidArgument, "the bytes are %s, not the declared %s", sniffed, declared)
}

// sniff detects the content type of head, the first bytes of a file.
func sniff(head []byte) string {
	return http.DetectContentType(head)
}

// inlineTypes are served with their own type and "inline": no browser
// runs them. Anything else (SVG, HTML, XML, PDF, scripts ...) is served as
// application/octet-stream with "attachment".
func servedType(t string) (contentType string, inline bool) {
	t = canonical(t)
	switch {
	case imageTypes[t]:
		return t, true
	case t == "audio/mpeg" || t == "audio/wave" || t == "audio/mp4" || t == "audio/aac" || t == "audio/webm" || t == "application/ogg" || t == "audio/flac":
		return t, true
	case t == "video/mp4" || t == "video/webm" || t == "video/quicktime":
		return t, true
	}
	return "application/octet-stream", false
}
