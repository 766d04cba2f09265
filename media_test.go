package herald

import (
	"strings"
	"testing"
)

func TestMediaPlaceholder(t *testing.T) {
	file := &Message{Type: MessageFile, Media: &Media{Name: "report.pdf"}}
	zh := map[MessageType]string{MessageImage: "[图片]", MessageFile: "[文件]"}
	cases := []struct {
		name  string
		m     *Message
		words map[MessageType]string
		want  string
	}{
		{"image", &Message{Type: MessageImage, Media: &Media{Name: "a.jpg"}}, nil, "[Image]"},
		{"file with its name", file, nil, "[File] report.pdf"},
		{"audio", &Message{Type: MessageAudio}, nil, "[Audio]"},
		{"video", &Message{Type: MessageVideo}, nil, "[Video]"},
		{"localised image", &Message{Type: MessageImage}, zh, "[图片]"},
		{"localised file keeps its name", file, zh, "[文件] report.pdf"},
		{"a type not localised keeps the default", &Message{Type: MessageVideo}, zh, "[Video]"},
		{"not media", &Message{Type: MessageText}, nil, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := MediaPlaceholder(c.m, c.words); got != c.want {
				t.Errorf("got %q, want %q", got, c.want)
			}
		})
	}
}

func TestValidateMediaName(t *testing.T) {
	for _, name := range []string{"photo.jpg", "名前 with spaces.pdf", ".bashrc", "a..b"} {
		if err := ValidateMediaName(name); err != nil {
			t.Errorf("ValidateMediaName(%q) = %v, want nil", name, err)
		}
	}
	for _, name := range []string{"", ".", "..", "../x", "a/b", `a\\b`, "a\x00b", "a\nb", "\xff", string(make([]byte, 256))} {
		if err := ValidateMediaName(name); err == nil {
			t.Errorf("ValidateMediaName(%q) = nil, want an error", name)
		}
	}
	// Over the limit is too_large (protocol.md §17.1), at it valid.
	if err := ValidateMediaName(strings.Repeat("n", MaxMediaNameBytes+1)); ErrorCode(err) != CodeTooLarge {
		t.Errorf("a name of %d bytes: %v, want too_large", MaxMediaNameBytes+1, err)
	}
	if err := ValidateMediaName(strings.Repeat("n", MaxMediaNameBytes)); err != nil {
		t.Errorf("a name of %d bytes: %v, want valid", MaxMediaNameBytes, err)
	}
}
