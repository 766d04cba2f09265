package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/jpeg"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/herald-im/herald/proto"
	"github.com/herald-im/herald/token"
)

// MediaOptions configures the media scenario: many small images uploaded
// concurrently, then a few large files, each streamed from a generator
// (never held in the bench's memory either).
type MediaOptions struct {
	Images      int   // small JPEG uploads; zero means 200
	Concurrency int   // uploads in progress at once; zero means 8
	Large       int   // large file uploads, one after another; zero means 1
	LargeBytes  int64 // size of each large file; zero means 1 GiB
	ChunkBytes  int64 // PATCH size; zero means the server's maximum (16 MiB)
	Progress    io.Writer
	Users       string // user ID prefix; empty means "bench"
}

// MediaServerEnv is what a server needs to take the scenario's files: a
// file limit and a daily quota above the large files.
func MediaServerEnv(o MediaOptions) []string {
	o = o.withDefaults()
	return []string{
		"HERALD_MEDIA_MAX_FILE_BYTES=" + strconv.FormatInt(o.LargeBytes, 10),
		"HERALD_MEDIA_DAILY_QUOTA=" + strconv.FormatInt(int64(o.Large+1)*o.LargeBytes+int64(o.Images)<<20, 10),
	}
}

func (o MediaOptions) withDefaults() MediaOptions {
	if o.Images == 0 {
		o.Images = 200
	}
	if o.Concurrency == 0 {
		o.Concurrency = 8
	}
	if o.Large == 0 {
		o.Large = 1
	}
	if o.LargeBytes == 0 {
		o.LargeBytes = 1 << 30
	}
	if o.ChunkBytes == 0 {
		o.ChunkBytes = 16 << 20
	}
	if o.Users == "" {
		o.Users = "bench"
	}
	return o
}

// MediaResult is the report; JSON names are a contract for tools.
type MediaResult struct {
	Images          int     `json:"images"`
	ImageBytes      int     `json:"image_bytes"`
	ImageErrors     int64   `json:"image_errors"`
	ImagesPerSec    float64 `json:"images_per_sec"`
	ImageMBPerSec   float64 `json:"image_mb_per_sec"`
	ImageCPUSec     float64 `json:"image_server_cpu_s"` // with their thumbnails
	Large           int     `json:"large"`
	LargeBytes      int64   `json:"large_bytes"`
	LargeMBPerSec   float64 `json:"large_mb_per_sec"`
	LargeCPUSec     float64 `json:"large_server_cpu_s"`
	RSSBefore       int64   `json:"server_rss_before"`
	RSSDuringLarge  int64   `json:"server_rss_max_during_large"` // sampled every 100 ms
	ServerPeakRSS   int64   `json:"server_peak_rss"`
	GeneratorCPUSec float64 `json:"generator_cpu_s"`
}

// Media runs the scenario against t.
func Media(ctx context.Context, t *Target, o MediaOptions) (MediaResult, error) {
	o = o.withDefaults()
	base := "http://" + strings.TrimSuffix(strings.TrimPrefix(t.URL, "ws://"), proto.Path)
	tok, err := token.Mint(t.Secret, o.Users+"-media", time.Now(), time.Hour)
	if err != nil {
		return MediaResult{}, err
	}
	img := benchJPEG()
	res := MediaResult{Images: o.Images, ImageBytes: len(img), Large: o.Large, LargeBytes: o.LargeBytes, RSSBefore: t.RSS()}
	hc := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: o.Concurrency}}
	up := uploader{hc: hc, base: base, tok: tok, chunk: o.ChunkBytes}
	genCPU := procCPU(os.Getpid())

	cpu0, start := t.CPU(), time.Now()
	var next atomic.Int64
	var wg sync.WaitGroup
	for range o.Concurrency {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(o.Images) && ctx.Err() == nil {
				if err := up.upload(ctx, "image", "photo.jpg", "image/jpeg", int64(len(img)), func(off, n int64) io.Reader {
					return bytes.NewReader(img[off : off+n])
				}); err != nil {
					if res.ImageErrors == 0 && o.Progress != nil {
						fmt.Fprintf(o.Progress, "image upload: %v\n", err)
					}
					atomic.AddInt64(&res.ImageErrors, 1)
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start).Seconds()
	res.ImagesPerSec = float64(o.Images) / el
	res.ImageMBPerSec = float64(o.Images*len(img)) / el / 1e6
	res.ImageCPUSec = (t.CPU() - cpu0).Seconds()
	if o.Progress != nil {
		fmt.Fprintf(o.Progress, "images: %d in %.1fs\n", o.Images, el)
	}

	stop := make(chan struct{})
	sampled := make(chan int64)
	go func() {
		var peak int64
		tk := time.NewTicker(100 * time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-stop:
				sampled <- peak
				return
			case <-tk.C:
				peak = max(peak, t.RSS())
			}
		}
	}()
	cpu0, start = t.CPU(), time.Now()
	for i := 0; i < o.Large && ctx.Err() == nil; i++ {
		err := up.upload(ctx, "file", "large.bin", "application/octet-stream", o.LargeBytes, func(off, n int64) io.Reader {
			return io.LimitReader(&pattern{off: off}, n)
		})
		if err != nil {
			close(stop)
			<-sampled
			return res, fmt.Errorf("large upload: %w", err)
		}
		if o.Progress != nil {
			fmt.Fprintf(o.Progress, "large file %d of %d bytes uploaded\n", i+1, o.LargeBytes)
		}
	}
	el = time.Since(start).Seconds()
	close(stop)
	res.RSSDuringLarge = <-sampled
	res.LargeMBPerSec = float64(int64(o.Large)*o.LargeBytes) / el / 1e6
	res.LargeCPUSec = (t.CPU() - cpu0).Seconds()
	res.ServerPeakRSS = t.PeakRSS()
	res.GeneratorCPUSec = (procCPU(os.Getpid()) - genCPU).Seconds()
	return res, ctx.Err()
}

// pattern is an endless, cheap, position-dependent byte stream.
type pattern struct{ off int64 }

func (p *pattern) Read(b []byte) (int, error) {
	for i := range b {
		v := p.off + int64(i)
		b[i] = byte(v ^ v>>11 ^ v>>23)
	}
	p.off += int64(len(b))
	return len(b), nil
}

type uploader struct {
	hc    *http.Client
	base  string
	tok   string
	chunk int64
}

// upload creates an upload and sends its bytes in chunks, body(off, n)
// giving the bytes of each.
func (u *uploader) upload(ctx context.Context, kind, name, mime string, size int64, body func(off, n int64) io.Reader) error {
	req, _ := json.Marshal(proto.CreateUploadRequest{Kind: kind, Name: name, MIME: mime, Size: size})
	var st proto.UploadStatus
	if err := u.do(ctx, http.MethodPost, proto.MediaUploadsPath, bytes.NewReader(req), int64(len(req)), nil, &st); err != nil {
		return err
	}
	for off := int64(0); off < size; {
		n := min(u.chunk, size-off)
		hdr := map[string]string{"Content-Type": proto.ContentTypeChunk, proto.HeaderUploadOffset: strconv.FormatInt(off, 10)}
		if err := u.do(ctx, http.MethodPatch, proto.MediaUploadPath+st.ID, body(off, n), n, hdr, &st); err != nil {
			return err
		}
		off = st.Offset
	}
	if !st.Complete {
		return fmt.Errorf("upload %s not complete after its last chunk", st.ID)
	}
	return nil
}

func (u *uploader) do(ctx context.Context, method, path string, body io.Reader, n int64, hdr map[string]string, out any) error {
	req, err := http.NewRequestWithContext(ctx, method, u.base+path, body)
	if err != nil {
		return err
	}
	req.ContentLength = n
	req.Header.Set("Authorization", "Bearer "+u.tok)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := u.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	return json.Unmarshal(b, out)
}

// benchJPEG is a photo-like JPEG of about 100 KB (1024x768).
func benchJPEG() []byte {
	m := image.NewRGBA(image.Rect(0, 0, 1024, 768))
	for y := 0; y < 768; y++ {
		for x := 0; x < 1024; x++ {
			v := uint32(x*x+y*7) * 2654435761
			m.Set(x, y, color.RGBA{uint8(x / 4), uint8(y / 3), uint8(v >> 24), 255})
		}
	}
	var buf bytes.Buffer
	jpeg.Encode(&buf, m, &jpeg.Options{Quality: 80})
	return buf.Bytes()
}
