package proto

import (
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
// value is read. The JSON codec checks every frame and payload it
// decodes with it, and the server API its request bodies.
func CheckKeys(data []byte, v any) error {
	c := keyChecker{b: data}
	return c.value(reflect.TypeOf(v))
}

// keyChecker walks valid JSON text alongside the Go type it decodes into.
type keyChecker struct {
	b []byte
	i int
}

var unmarshalerType = reflect.TypeFor[json.Unmarshaler]()

// target returns the type whose fields name the keys of a value decoded
// into t; nil when the keys are not fields (an interface, a type with its
// own UnmarshalJSON such as json.RawMessage).
func target(t reflect.Type) reflect.Type {
	for t != nil && t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == nil || t.Kind() == reflect.Interface || reflect.PointerTo(t).Implements(unmarshalerType) {
		return nil
	}
	return t
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

func (c *keyChecker) value(t reflect.Type) error {
	c.skipSpace()
	if c.i >= len(c.b) {
		return nil
	}
	t = target(t)
	switch c.b[c.i] {
	case '{':
		return c.object(t)
	case '[':
		var elem reflect.Type
		if t != nil && (t.Kind() == reflect.Slice || t.Kind() == reflect.Array) {
			elem = t.Elem()
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
	case '"':
		_, err := c.str()
		return err
	default: // a number, true, false or null
		for c.i < len(c.b) && !strings.ContainsRune(",]} \t\r\n", rune(c.b[c.i])) {
			c.i++
		}
		return nil
	}
}

// str reads a string and returns it decoded as encoding/json decodes it.
func (c *keyChecker) str() (string, error) {
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
		return "", errors.New("unterminated string")
	}
	if plain {
		return string(raw[1 : len(raw)-1]), nil
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", err
	}
	return s, nil
}

func (c *keyChecker) object(t reflect.Type) error {
	var (
		fields *fieldSet
		elem   reflect.Type
	)
	if t != nil {
		switch t.Kind() {
		case reflect.Struct:
			fields = fieldsOf(t)
		case reflect.Map:
			elem = t.Elem()
		}
	}
	var (
		few  []string            // the keys seen, while few
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
			_, dup = many[key]
			many[key] = struct{}{}
		} else {
			for _, k := range few {
				dup = dup || k == key
			}
			if few = append(few, key); len(few) > 16 {
				many = make(map[string]struct{}, 2*len(few))
				for _, k := range few {
					many[k] = struct{}{}
				}
			}
		}
		if dup {
			return fmt.Errorf("key %q appears twice in one object", key)
		}
		c.skipSpace()
		c.i++ // ':'
		ft := elem
		if fields != nil {
			var ok bool
			if ft, ok = fields.byName[key]; !ok {
				for _, name := range fields.names {
					if strings.EqualFold(name, key) {
						return fmt.Errorf("key %q is not %q: keys are case-sensitive", key, name)
					}
				}
			}
		}
		if err := c.value(ft); err != nil {
			return err
		}
		c.skipSpace()
		if c.i < len(c.b) && c.b[c.i] == ',' {
			c.i++
		}
	}
}

// fieldSet is what encoding/json matches keys against for a struct type.
type fieldSet struct {
	byName map[string]reflect.Type
	names  []string
}

var fieldSets sync.Map // reflect.Type -> *fieldSet

func fieldsOf(t reflect.Type) *fieldSet {
	if fs, ok := fieldSets.Load(t); ok {
		return fs.(*fieldSet)
	}
	fs := &fieldSet{byName: make(map[string]reflect.Type)}
	addFields(fs, t, 0)
	fieldSets.Store(t, fs)
	return fs
}

// addFields adds t's JSON fields to fs, those of embedded structs
// promoted as encoding/json promotes them (a shallower name wins).
func addFields(fs *fieldSet, t reflect.Type, depth int) {
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
		if _, ok := fs.byName[name]; !ok {
			fs.byName[name] = f.Type
			fs.names = append(fs.names, name)
		}
	}
	for _, e := range embedded {
		addFields(fs, e, depth+1)
	}
}
