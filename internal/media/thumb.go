package media

import (
	"bytes"
	"context"
	"image"
	"image/color"
	_ "image/gif" // decoders: GIF (first frame), JPEG, PNG, WebP
	"image/jpeg"
	_ "image/png"
	"io"

	"golang.org/x/image/draw"
	_ "golang.org/x/image/webp"

	"github.com/herald-im/herald"
)

// thumbnailer makes thumbnails on a fixed number of workers: a decode takes
// a worker slot (slots), and at most queue requests wait for one; more are
// turned away (the upload completes without a thumbnail). Decoding is
// pure Go; an image whose header declares more than maxPixels pixels is
// refused before any pixel is decoded (a decompression bomb).
type thumbnailer struct {
	slots     chan struct{}
	waiting   chan struct{}
	maxPixels int64
	size      int
}

func newThumbnailer(workers, queue int, maxPixels int64, size int) *thumbnailer {
	return &thumbnailer{slots: make(chan struct{}, workers), waiting: make(chan struct{}, workers+queue), maxPixels: maxPixels, size: size}
}

var errThumbBusy = herald.Errorf(herald.CodeUnavailable, "every thumbnail worker is busy")

// measure reads r's image header: its format and size. CodeTooLarge for
// an image over the pixel limit, CodeInvalidArgument for bytes no
// decoder reads.
func (t *thumbnailer) measure(r io.Reader) (w, h int, err error) {
	cfg, format, err := image.DecodeConfig(r)
	if err != nil {
		return 0, 0, herald.Errorf(herald.CodeInvalidArgument, "the image cannot be read: %v", err)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return 0, 0, herald.Errorf(herald.CodeInvalidArgument, "the %s image has no pixels", format)
	}
	if int64(cfg.Width)*int64(cfg.Height) > t.maxPixels {
		return 0, 0, herald.Errorf(herald.CodeTooLarge, "the image is %dx%d pixels; the limit is %d pixels", cfg.Width, cfg.Height, t.maxPixels)
	}
	return cfg.Width, cfg.Height, nil
}

// make decodes the image of open (measured already, under the limit) and
// returns a JPEG no larger than size x size and its dimensions. It waits
// for a worker until ctx ends; errThumbBusy when the queue is full.
func (t *thumbnailer) make(ctx context.Context, r io.Reader) ([]byte, int, int, error) {
	select {
	case t.waiting <- struct{}{}:
	default:
		return nil, 0, 0, errThumbBusy
	}
	defer func() { <-t.waiting }()
	select {
	case t.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, 0, 0, ctx.Err()
	}
	defer func() { <-t.slots }()
	img, _, err := image.Decode(r)
	if err != nil {
		return nil, 0, 0, herald.Errorf(herald.CodeInvalidArgument, "the image cannot be decoded: %v", err)
	}
	small := scale(img, t.size)
	var buf bytes.Buffer
	if err := jpeg.Encode(&buf, small, &jpeg.Options{Quality: 80}); err != nil {
		return nil, 0, 0, err
	}
	b := small.Bounds()
	return buf.Bytes(), b.Dx(), b.Dy(), nil
}

// scale returns img shrunk (never enlarged) to fit max x max, with a
// bilinear kernel stretched over the shrink (every source pixel counts,
// so no aliasing), on white where the source is transparent (JPEG has no
// alpha). x/image/draw has fast paths for the decoders' image types.
func scale(img image.Image, max int) *image.RGBA {
	sb := img.Bounds()
	sw, sh := sb.Dx(), sb.Dy()
	w, h := sw, sh
	if w > max || h > max {
		if w >= h {
			w, h = max, (sh*max+sw/2)/sw
		} else {
			w, h = (sw*max+sh/2)/sh, max
		}
	}
	w, h = maxInt(w, 1), maxInt(h, 1)
	dst := image.NewRGBA(image.Rect(0, 0, w, h))
	draw.Draw(dst, dst.Bounds(), image.NewUniform(color.White), image.Point{}, draw.Src)
	draw.BiLinear.Scale(dst, dst.Bounds(), img, sb, draw.Over, nil)
	return dst
}

func maxInt(a, b int) int {
	if a > b {
		return a
	}
	return b
}
