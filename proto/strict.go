package proto

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
)

// CheckKeys refuses JSON that encoding/json would decode into v by
// guessing: an object with the same key twice (the decoder keeps the last,
// where another reader may keep the first), and a key that names a field
// of v's type only when case is ignored ("OP" for "op": the decoder
// matches it, another reader does not). So what a proxy or a callback
// reads from a request is what the server acts on. Keys that name no field
// are left alone (unknown fields are ignored), but they too must not
// repeat. data must be JSON that json.Unmarshal accepted; only its first
// value is read. The JSON codec holds every frame and payload it decodes
// to it (its fast paths decline whatever it would refuse), and the server
// API its request bodies.
func CheckKeys(data []byte, v any) error {
	c := keyChecker{b: data}
	return c.value(shapeOf(reflect.TypeOf(v)))
}

// keyChecker walks valid JSON text alongside the shape of the Go type it
// decodes into.
type keyChecker struct {
	b []byte
	i int
}

// shape is what CheckKeys needs of a Go type, worked out once per type:
// the fields that name an object's keys (a struct), or the shape of the
// elements (a map, slice or array). A nil *shape stands for a value whose
// keys are not fields (an interface, a type with its own UnmarshalJSON
// such as json.RawMessage): only repeats are refused there.
type shape struct {
	fields map[string]*shape // by exact JSON name; nil unless a struct
	names  []string          // the keys of fields
	elem   *shape
}

var (
	shapes          sync.Map   // reflect.Type -> *shape, complete ones only
	shapesMu        sync.Mutex // serialises building
	unmarshalerType = reflect.TypeFor[json.Unmarshaler]()
)

// keyed reports whether the keys of a value decoded into t name its
// fields or elements, and returns t without its pointers.
func keyed(t reflect.Type) (reflect.Type, bool) {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t, t != nil && t.Kind() != reflect.Interface && !reflect.PointerTo(t).Implements(unmarshalerType)
}

func shapeOf(t reflect.Type) *shape {
	t, ok := keyed(t)
	if !ok {
		return nil
	}
	if s, ok := shapes.Load(t); ok {
		return s.(*shape)
	}
	shapesMu.Lock()
	defer shapesMu.Unlock()
	building := make(map[reflect.Type]*shape)
	sh := buildShape(t, building)
	for bt, bs := range building { // published once complete, recursive types included
		shapes.Store(bt, bs)
	}
	return sh
}

// buildShape works out t's shape; shapesMu must be held. building holds
// the shapes of this build, so a recursive type refers to itself.
func buildShape(t reflect.Type, building map[reflect.Type]*shape) *shape {
	t, ok := keyed(t)
	if !ok {
		return nil
	}
	if s, ok := shapes.Load(t); ok {
		return s.(*shape)
	}
	if sh, ok := building[t]; ok {
		return sh
	}
	sh := &shape{}
	building[t] = sh
	switch t.Kind() {
	case reflect.Struct:
		sh.fields = make(map[string]*shape)
		addFields(sh, t, 0, building)
	case reflect.Map, reflect.Slice, reflect.Array:
		if t.Kind() != reflect.Slice || t.Elem().Kind() != reflect.Uint8 { // []byte is a string
			sh.elem = buildShape(t.Elem(), building)
		}
	}
	return sh
}

// addFields adds t's JSON fields to sh, those of embedded structs
// promoted as encoding/json promotes them (a shallower name wins).
func addFields(sh *shape, t reflect.Type, depth int, building map[reflect.Type]*shape) {
	if depth > 8 {
		return
	}
	var embedded []reflect.Type
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, _, _ := strings.Cut(tag, ",")
		if f.Anonymous && name == "" {
			ft := f.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if ft.Kind() == reflect.Struct {
				embedded = append(embedded, ft)
				continue
			}
		}
		if !f.IsExported() {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if _, ok := sh.fields[name]; !ok {
			sh.fields[name] = buildShape(f.Type, building)
			sh.names = append(sh.names, name)
		}
	}
	for _, e := range embedded {
		addFields(sh, e, depth+1, building)
	}
}

func (c *keyChecker) skipSpace() {
	for c.i < len(c.b) {
		switch c.b[c.i] {
		case ' ', '\t', '\n', '\r':
			c.i++
		default:
			return
		}
	}
}

func (c *keyChecker) value(sh *shape) error {
	c.skipSpace()
	if c.i >= len(c.b) {
		return nil
	}
	switch c.b[c.i] {
	case '{':
		return c.object(sh)
	case '[':
		var elem *shape
		if sh != nil {
			elem = sh.elem
		}
		c.i++
		for {
			c.skipSpace()
			if c.i >= len(c.b) || c.b[c.i] == ']' {
				c.i++
				return nil
			}
			if err := c.value(elem); err != nil {
				return err
			}
			c.skipSpace()
			if c.i < len(c.b) && c.b[c.i] == ',' {
				c.i++
			}
		}
	case '"': // a value: skipped, not decoded
		c.i++
		for c.i < len(c.b) && c.b[c.i] != '"' {
			if c.b[c.i] == '\\' {
				c.i++
			}
			c.i++
		}
		c.i++
		return nil
	default: // a number, true, false or null
		for c.i < len(c.b) && !strings.ContainsRune(",]} \t\r\n", rune(c.b[c.i])) {
			c.i++
		}
		return nil
	}
}

// str reads a string and returns it as encoding/json decodes it. A plain
// string (no escape, ASCII) is returned as a slice of the input; any
// other is decoded.
func (c *keyChecker) str() ([]byte, error) {
	start := c.i
	c.i++
	plain := true
	for c.i < len(c.b) && c.b[c.i] != '"' {
		if c.b[c.i] == '\\' {
			plain = false
			c.i++
		} else if c.b[c.i] >= 0x80 {
			plain = false // invalid UTF-8 decodes to U+FFFD
		}
		c.i++
	}
	c.i++
	raw := c.b[start:min(c.i, len(c.b))]
	if len(raw) < 2 || raw[len(raw)-1] != '"' {
		return nil, errors.New("unterminated string")
	}
	if plain {
		return raw[1 : len(raw)-1], nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, err
	}
	return []byte(s), nil
}

func (c *keyChecker) object(sh *shape) error {
	var (
		buf  [16][]byte
		few  = buf[:0]           // the keys seen, while few
		many map[string]struct{} // then
	)
	c.i++
	for {
		c.skipSpace()
		if c.i >= len(c.b) || c.b[c.i] == '}' {
			c.i++
			return nil
		}
		key, err := c.str()
		if err != nil {
			return err
		}
		dup := false
		if many != nil {
			_, dup = many[string(key)]
			many[string(key)] = struct{}{}
		} else {
			for _, k := range few {
				dup = dup || bytes.Equal(k, key)
			}
			if few = append(few, key); len(few) == len(buf) {
				many = make(map[string]struct{}, 2*len(few))
				for _, k := range few {
					many[string(k)] = struct{}{}
				}
			}
		}
		if dup {
			return fmt.Errorf("key %q appears twice in one object", key)
		}
		c.skipSpace()
		c.i++ // ':'
		var ksh *shape
		if sh != nil {
			if sh.fields != nil {
				var ok bool
				if ksh, ok = sh.fields[string(key)]; !ok {
					for _, name := range sh.names {
						if strings.EqualFold(name, string(key)) {
							return fmt.Errorf("key %q is not %q: keys are case-sensitive", key, name)
						}
					}
				}
			} else {
				ksh = sh.elem
			}
		}
		if err := c.value(ksh); err != nil {
			return err
		}
		c.skipSpace()
		if c.i < len(c.b) && c.b[c.i] == ',' {
			c.i++
		}
	}
}
