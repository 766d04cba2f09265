package media

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/herald-im/herald"
)

// S3 is Blobs in an S3-compatible object store (AWS S3, MinIO, Ceph,
// SeaweedFS), through minio-go, for several nodes sharing one store of
// files. Objects are under Prefix: "blobs/ID" for a finished file, and
// "uploads/ID/OFFSET" (OFFSET zero-padded to 20 digits) for each chunk of
// an unfinished one. A chunk is first spooled to a local temporary file
// (at most one chunk, proto's 16 MiB), so its exact length is known when
// it is stored and the bytes read before a dropped connection are stored
// too. Commit streams the chunks, in order, into the blob (one pass
// through the node, never whole in memory: minio-go holds one part of a
// large object at a time) and deletes them.
//
// Objects are written with an unsigned payload (DisableContentSha256):
// Herald hashes every file itself, TLS protects the bytes in transit, and
// it spares a second SHA-256 pass and the aws-chunked framing that some
// S3-compatible servers do not decode.
type S3 struct {
	c      *minio.Client
	bucket string
	prefix string
	spool  string // folder for chunk spooling
}

// OpenS3 connects to the store a URL names:
// http(s)://ACCESS_KEY:SECRET_KEY@host:port/bucket[/prefix][?region=R].
// http means no TLS. The bucket must exist. spool is a local folder for
// chunks in transit. Errors do not name the setting the URL came from:
// the caller does.
func OpenS3(ctx context.Context, rawURL, spool string) (*S3, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, errors.New("not a URL")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, errors.New("scheme must be http or https")
	}
	bucket, prefix, _ := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if bucket == "" || u.User == nil {
		return nil, errors.New("want http(s)://ACCESS_KEY:SECRET_KEY@host:port/bucket[/prefix]")
	}
	secret, _ := u.User.Password()
	c, err := minio.New(u.Host, &minio.Options{
		Creds:  credentials.NewStaticV4(u.User.Username(), secret, ""),
		Secure: u.Scheme == "https", Region: u.Query().Get("region"),
	})
	if err != nil {
		return nil, err
	}
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	if err := os.MkdirAll(spool, 0o700); err != nil {
		return nil, err
	}
	ok, err := c.BucketExists(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %q at %s: %w", bucket, u.Host, err)
	}
	if !ok {
		return nil, fmt.Errorf("bucket %q does not exist at %s", bucket, u.Host)
	}
	return &S3{c: c, bucket: bucket, prefix: prefix, spool: spool}, nil
}

func (s *S3) blobKey(id string) string  { return s.prefix + "blobs/" + id }
func (s *S3) partsKey(id string) string { return s.prefix + "uploads/" + id + "/" }

// partName names a chunk at offset: the offset, and a random suffix, so
// two nodes storing a chunk at one offset (a client's retry running beside
// the original) never overwrite each other's object.
func partName(offset int64) string { return fmt.Sprintf("%020d-%s", offset, newID()[:12]) }

func partOffset(key string) (int64, error) {
	name := key[strings.LastIndexByte(key, '/')+1:]
	name, _, _ = strings.Cut(name, "-")
	return strconv.ParseInt(name, 10, 64)
}

type part struct {
	key          string
	offset, size int64
}

// parts lists the chunks of upload id by offset, the longest first at one
// offset.
func (s *S3) parts(ctx context.Context, id string) ([]part, error) {
	var out []part
	for o := range s.c.ListObjects(ctx, s.bucket, minio.ListObjectsOptions{Prefix: s.partsKey(id), Recursive: true}) {
		if o.Err != nil {
			return nil, o.Err
		}
		off, err := partOffset(o.Key)
		if err != nil {
			continue
		}
		out = append(out, part{key: o.Key, offset: off, size: o.Size})
	}
	slices.SortFunc(out, func(a, b part) int {
		if a.offset != b.offset {
			return cmpInt(a.offset, b.offset)
		}
		return cmpInt(b.size, a.size)
	})
	return out, nil
}

func cmpInt(a, b int64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Append implements Blobs. Chunks are never deleted here (another node
// may be storing the chunk its record will name): overlapping or surplus
// chunks are sorted out by Commit. Every chunk holds the file's bytes at
// its offset, so any of them covering a position has the right bytes.
func (s *S3) Append(ctx context.Context, id string, offset int64, r io.Reader) (int64, error) {
	if !ValidID(id) {
		return 0, herald.Errorf(herald.CodeInvalidArgument, "%q is not a media ID", id)
	}
	if offset > 0 {
		parts, err := s.parts(ctx, id)
		if err != nil {
			return 0, err
		}
		if covered(parts, offset) < offset {
			return 0, herald.Errorf(herald.CodeNotFound, "upload %q holds fewer than %d bytes", id, offset)
		}
	}
	f, err := os.CreateTemp(s.spool, "chunk-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, rerr := io.Copy(f, ctxReader{ctx, r})
	if n == 0 {
		return 0, rerr
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if _, err := s.c.PutObject(context.WithoutCancel(ctx), s.bucket, s.partsKey(id)+partName(offset), f, n, s.putOptions()); err != nil {
		return 0, err
	}
	return n, rerr
}

// covered returns how far from 0 the parts cover without a gap.
func covered(parts []part, limit int64) int64 {
	var at int64
	for _, p := range parts {
		if p.offset > at || at >= limit {
			break
		}
		at = max(at, p.offset+p.size)
	}
	return at
}

func (s *S3) putOptions() minio.PutObjectOptions {
	return minio.PutObjectOptions{ContentType: "application/octet-stream", DisableContentSha256: true}
}

// Commit implements Blobs: bytes [0, size) are read from the chunks that
// cover them (a range of the one reaching furthest), streamed into the
// blob, and every chunk is deleted.
func (s *S3) Commit(ctx context.Context, id string, size int64) error {
	parts, err := s.parts(ctx, id)
	if err != nil {
		return err
	}
	if got := covered(parts, size); got < size {
		return fmt.Errorf("upload %s: chunks cover %d of its %d bytes", id, got, size)
	}
	r := &partsReader{ctx: ctx, s: s, parts: parts, size: size}
	defer r.Close()
	if _, err := s.c.PutObject(ctx, s.bucket, s.blobKey(id), r, size, s.putOptions()); err != nil {
		return err
	}
	for _, p := range parts {
		if err := s.c.RemoveObject(ctx, s.bucket, p.key, minio.RemoveObjectOptions{}); err != nil {
			return err
		}
	}
	return nil
}

// partsReader reads bytes [0, size) of an upload from its chunks: at each
// position, a range of the chunk that starts at or before it and reaches
// furthest past it.
type partsReader struct {
	ctx   context.Context
	s     *S3
	parts []part
	size  int64
	at    int64
	cur   *minio.Object
	left  int64 // bytes still to read from cur
}

func (p *partsReader) Read(b []byte) (int, error) {
	for {
		if p.at >= p.size {
			return 0, io.EOF
		}
		if p.cur == nil {
			best := -1
			for i, c := range p.parts {
				if c.offset <= p.at && c.offset+c.size > p.at && (best < 0 || c.offset+c.size > p.parts[best].offset+p.parts[best].size) {
					best = i
				}
			}
			if best < 0 {
				return 0, fmt.Errorf("no chunk holds byte %d", p.at)
			}
			c := p.parts[best]
			end := min(c.offset+c.size, p.size)
			opts := minio.GetObjectOptions{}
			if err := opts.SetRange(p.at-c.offset, end-c.offset-1); err != nil {
				return 0, err
			}
			o, err := p.s.c.GetObject(p.ctx, p.s.bucket, c.key, opts)
			if err != nil {
				return 0, err
			}
			p.cur, p.left = o, end-p.at
		}
		n, err := p.cur.Read(b[:min(int64(len(b)), p.left)])
		p.at += int64(n)
		p.left -= int64(n)
		if p.left == 0 || errors.Is(err, io.EOF) {
			p.cur.Close()
			p.cur = nil
			if p.left > 0 {
				return n, fmt.Errorf("chunk ended %d bytes early", p.left)
			}
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (p *partsReader) Close() {
	if p.cur != nil {
		p.cur.Close()
	}
}

// Put implements Blobs.
func (s *S3) Put(ctx context.Context, id string, r io.Reader) (int64, error) {
	if !ValidID(id) {
		return 0, herald.Errorf(herald.CodeInvalidArgument, "%q is not a media ID", id)
	}
	f, err := os.CreateTemp(s.spool, "put-*")
	if err != nil {
		return 0, err
	}
	defer os.Remove(f.Name())
	defer f.Close()
	n, err := io.Copy(f, ctxReader{ctx, r})
	if err != nil {
		return 0, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return 0, err
	}
	if _, err := s.c.PutObject(ctx, s.bucket, s.blobKey(id), f, n, s.putOptions()); err != nil {
		return 0, err
	}
	return n, nil
}

// Open implements Blobs.
func (s *S3) Open(ctx context.Context, id string) (Blob, error) {
	if !ValidID(id) {
		return nil, herald.Errorf(herald.CodeInvalidArgument, "%q is not a media ID", id)
	}
	o, err := s.c.GetObject(ctx, s.bucket, s.blobKey(id), minio.GetObjectOptions{})
	if err != nil {
		return nil, err
	}
	st, err := o.Stat()
	if err != nil {
		o.Close()
		if minio.ToErrorResponse(err).Code == "NoSuchKey" {
			return nil, herald.Errorf(herald.CodeNotFound, "no stored file %q", id)
		}
		return nil, err
	}
	return &s3Blob{Object: o, size: st.Size, mod: st.LastModified}, nil
}

type s3Blob struct {
	*minio.Object
	size int64
	mod  time.Time
}

func (b *s3Blob) Size() int64        { return b.size }
func (b *s3Blob) ModTime() time.Time { return b.mod }

// Delete implements Blobs.
func (s *S3) Delete(ctx context.Context, id string) error {
	if !ValidID(id) {
		return herald.Errorf(herald.CodeInvalidArgument, "%q is not a media ID", id)
	}
	parts, err := s.parts(ctx, id)
	if err != nil {
		return err
	}
	for _, p := range parts {
		if err := s.c.RemoveObject(ctx, s.bucket, p.key, minio.RemoveObjectOptions{}); err != nil {
			return err
		}
	}
	return s.c.RemoveObject(ctx, s.bucket, s.blobKey(id), minio.RemoveObjectOptions{})
}

// Presign returns a URL that downloads blob id straight from the store
// until ttl has passed, answered with contentType and disposition.
func (s *S3) Presign(ctx context.Context, id string, ttl time.Duration, contentType, disposition string) (string, error) {
	q := url.Values{}
	q.Set("response-content-type", contentType)
	q.Set("response-content-disposition", disposition)
	u, err := s.c.PresignedGetObject(ctx, s.bucket, s.blobKey(id), ttl, q)
	if err != nil {
		return "", err
	}
	return u.String(), nil
}
