package push

import (
	"context"
	"encoding/json"
	"fmt"
	"sort"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/store"
)

// Strategies come from two places: the push configuration file (fixed
// while the server runs) and the server API and console (managed, kept in
// the store so that every node on it sees them). A resources ID names one
// or the other, never both: the API refuses to put or delete one the file
// defines.
//
// The managed strategies are one record of the store's shared table
// (namespace store.SharedPushStrategies), a JSON object of ID to strategy
// changed by compare-and-swap on its version, so two nodes changing
// strategies at once both land. Each node mirrors it in memory: the send
// path reads the mirror, never the store, except when a resources ID is
// unknown (a store read, so a strategy put on another node is usable
// here before its notice arrives; such reads are one at a time and at
// most one a second per node, whatever the IDs, and a failed one is
// CodeUnavailable, never "unknown"). A node that changed it tells
// Changes; the others read it again (RefreshStrategies), and the
// cluster's periodic reload heals a lost notice.

// Strategy limits.
const (
	MaxStrategyText = 64 // sound, category, channel_id, collapse_key, android_category
	// MaxStrategyTTL is the longest ttl_seconds: 30 days, the longest
	// push TTL the server takes.
	MaxStrategyTTL = 30 * 24 * 60 * 60
	// maxStrategyRecord bounds the managed strategies together, as JSON:
	// a shared-table value.
	maxStrategyRecord = store.MaxSharedValue
)

// strategyKey is the shared-table key of the managed strategies' record.
const strategyKey = "all"

// strategyForever is the record's expiry: it never expires.
var strategyForever = time.Date(9999, 1, 1, 0, 0, 0, 0, time.UTC)

// ValidateStrategy checks strategy st named id and names the field at
// fault: CodeInvalidArgument, or CodeTooLarge for a field over its limit.
func ValidateStrategy(id string, st *Strategy) error {
	if err := ValidateResourcesID(id); err != nil {
		return err
	}
	switch st.Type {
	case "", TypeAlert, TypeBackground, TypeVoIP:
	default:
		return herald.Errorf(herald.CodeInvalidArgument, "strategy %q: type %q is not alert, background or voip", id, st.Type)
	}
	switch st.Priority {
	case 0, 1, 5, 10:
	default:
		return herald.Errorf(herald.CodeInvalidArgument, "strategy %q: priority %d is not 10, 5 or 1", id, st.Priority)
	}
	if st.Type == TypeBackground && st.Priority == 10 {
		return herald.Errorf(herald.CodeInvalidArgument, "strategy %q: priority 10 with type background: APNs takes a background push only at priority 5 or 1", id)
	}
	switch st.InterruptionLevel {
	case "", "passive", "active", "time-sensitive", "critical":
	default:
		return herald.Errorf(herald.CodeInvalidArgument, "strategy %q: interruption_level %q is not passive, active, time-sensitive or critical", id, st.InterruptionLevel)
	}
	switch st.Importance {
	case "", "low", "normal", "high":
	default:
		return herald.Errorf(herald.CodeInvalidArgument, "strategy %q: importance %q is not low, normal or high", id, st.Importance)
	}
	for _, f := range []struct{ name, v string }{
		{"sound", st.Sound}, {"category", st.Category}, {"channel_id", st.ChannelID},
		{"collapse_key", st.CollapseKey}, {"android_category", st.AndroidCategory},
	} {
		if len(f.v) > MaxStrategyText {
			return herald.Errorf(herald.CodeTooLarge, "strategy %q: %s is %d bytes; the limit is %d", id, f.name, len(f.v), MaxStrategyText)
		}
		if !utf8.ValidString(f.v) {
			return herald.Errorf(herald.CodeInvalidArgument, "strategy %q: %s is not valid UTF-8", id, f.name)
		}
		for _, r := range f.v {
			if r < ' ' || r == 0x7f {
				return herald.Errorf(herald.CodeInvalidArgument, "strategy %q: %s has a control character", id, f.name)
			}
		}
	}
	for i := 0; i < len(st.AndroidCategory); i++ {
		if c := st.AndroidCategory[i]; !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			return herald.Errorf(herald.CodeInvalidArgument, "strategy %q: android_category %q has character %q; a category is upper-case letters, digits and _ (IM, VOIP)", id, st.AndroidCategory, c)
		}
	}
	if st.TTLSeconds < 0 || st.TTLSeconds > MaxStrategyTTL {
		return herald.Errorf(herald.CodeInvalidArgument, "strategy %q: ttl_seconds %d is out of range 0-%d", id, st.TTLSeconds, MaxStrategyTTL)
	}
	return nil
}

// ValidateResourcesID checks a strategy's name: 1-32 bytes of printable
// ASCII without spaces.
func ValidateResourcesID(id string) error {
	if id == "" || len(id) > herald.MaxResourcesIDBytes {
		return herald.Errorf(herald.CodeInvalidArgument, "resources ID %q: a resources ID is 1-%d bytes", id, herald.MaxResourcesIDBytes)
	}
	for i := 0; i < len(id); i++ {
		if c := id[i]; c <= ' ' || c >= 0x7f {
			return herald.Errorf(herald.CodeInvalidArgument, "resources ID %q has character %q at byte %d; a resources ID is printable ASCII without spaces", id, rune(c), i)
		}
	}
	return nil
}

// Strategy sources.
const (
	SourceFile = "file" // the push configuration file
	SourceAPI  = "api"  // the server API or the console, kept in the store
)

// NamedStrategy is a strategy with its resources ID and where it comes from.
type NamedStrategy struct {
	ID       string   `json:"resources_id"`
	Source   string   `json:"source"` // SourceFile or SourceAPI
	Strategy Strategy `json:"strategy"`
}

// sharedStore is what the managed strategies need of the store: its
// shared table. A store without it serves the file's strategies only.
type sharedStore interface {
	PutShared(ctx context.Context, e store.SharedEntry, now time.Time) (store.SharedEntry, error)
	GetShared(ctx context.Context, namespace, key string, now time.Time) (store.SharedEntry, error)
}

// strategySet holds the file's strategies and the mirror of the managed
// ones. mu is a leaf lock; writeMu serialises this node's changes (store
// write, then the mirror) and is taken before mu. missMu is a leaf lock
// of its own: the send path never waits on writeMu. The mirror's version
// only grows (setManaged), so a read that finishes after a newer write or
// refresh does not bring older strategies back, whoever holds writeMu.
type strategySet struct {
	file    map[string]Strategy // never changes after New
	writeMu sync.Mutex
	mu      sync.RWMutex
	managed map[string]Strategy
	version int64 // the record's version the mirror holds; 0: none stored

	// The store reads of IDs not in memory (missed): at most one in
	// flight, and one begun at most every missRecheck, whatever the IDs,
	// so that sends naming random unknown IDs cost the store at most a
	// read a second. Under missMu.
	missMu   sync.Mutex
	missAt   time.Time     // when the last miss read that did not fail began
	missWait chan struct{} // closed when the read in flight ends; nil: none
	missErr  error         // the last miss read's error
}

// missRecheck is how often at most an ID not in memory reads the store.
const missRecheck = time.Second

// strategy returns the strategy id names ("": the plain alert). An ID
// not in memory may read the store (put on another node, its notice not
// here yet; missed): unknown after that is CodeInvalidArgument, and
// CodeUnavailable when the read failed (the ID may well exist).
func (s *Service) strategy(id string) (Strategy, error) {
	if id == "" {
		return Strategy{}, nil
	}
	if st, ok := s.strategies.file[id]; ok {
		return st, nil
	}
	if st, ok := s.managedStrategy(id); ok {
		return st, nil
	}
	if s.shared != nil {
		if err := s.missed(); err != nil {
			return Strategy{}, herald.Errorf(herald.CodeUnavailable, "push.resources_id %q: the push strategies could not be read: %s", id, herald.ErrorMessage(err))
		}
		if st, ok := s.managedStrategy(id); ok {
			return st, nil
		}
	}
	return Strategy{}, herald.Errorf(herald.CodeInvalidArgument, "push.resources_id %q names no push strategy configured on this server", id)
}

func (s *Service) managedStrategy(id string) (Strategy, bool) {
	s.strategies.mu.RLock()
	defer s.strategies.mu.RUnlock()
	st, ok := s.strategies.managed[id]
	return st, ok
}

// missed reads the managed strategies into memory for an ID not there,
// unless a read began less than missRecheck ago; a caller that finds one
// in flight waits for it instead. It returns the error of the read it
// made or waited for (nil when it made none). It blocks on the store.
func (s *Service) missed() error {
	ss := &s.strategies
	now := s.cfg.Now()
	ss.missMu.Lock()
	if ch := ss.missWait; ch != nil {
		ss.missMu.Unlock()
		select {
		case <-ch:
		case <-s.dsp.abort.Done():
			return s.dsp.abort.Err()
		}
		ss.missMu.Lock()
		defer ss.missMu.Unlock()
		return ss.missErr
	}
	if !ss.missAt.IsZero() && !now.Before(ss.missAt) && now.Sub(ss.missAt) < missRecheck {
		ss.missMu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	prev := ss.missAt
	ss.missWait, ss.missAt = ch, now
	ss.missMu.Unlock()

	ctx, cancel := context.WithTimeout(s.dsp.abort, 5*time.Second)
	_, err := s.refreshMirror(ctx)
	cancel()

	ss.missMu.Lock()
	ss.missWait, ss.missErr = nil, err
	if err != nil {
		ss.missAt = prev // a failed read does not count: the next miss reads again
	}
	ss.missMu.Unlock()
	close(ch)
	return err
}

// Strategies lists every strategy in force, by resources ID: a stored
// strategy the file defines too is shadowed by the file's and listed once,
// as the file's.
func (s *Service) Strategies() []NamedStrategy {
	out := make([]NamedStrategy, 0, len(s.strategies.file))
	for id, st := range s.strategies.file {
		out = append(out, NamedStrategy{ID: id, Source: SourceFile, Strategy: st})
	}
	s.strategies.mu.RLock()
	for id, st := range s.strategies.managed {
		if _, shadowed := s.strategies.file[id]; shadowed {
			continue
		}
		out = append(out, NamedStrategy{ID: id, Source: SourceAPI, Strategy: st})
	}
	s.strategies.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// PutStrategy creates or replaces the managed strategy id, in the store
// first, and returns it. CodeInvalidArgument as ValidateStrategy;
// CodeConflict when the push configuration file defines id; CodeTooLarge
// when the managed strategies together would exceed 16 KiB of JSON;
// CodeUnavailable when the store keeps no shared table. It blocks on the
// store.
func (s *Service) PutStrategy(ctx context.Context, id string, st Strategy) (NamedStrategy, error) {
	if err := ValidateStrategy(id, &st); err != nil {
		return NamedStrategy{}, err
	}
	if _, ok := s.strategies.file[id]; ok {
		return NamedStrategy{}, herald.Errorf(herald.CodeConflict, "push strategy %q is defined in the push configuration file; change it there", id)
	}
	err := s.changeStrategies(ctx, func(m map[string]Strategy) bool { m[id] = st; return true })
	if err != nil {
		return NamedStrategy{}, err
	}
	s.log.Info("push strategy stored", "resources_id", id)
	return NamedStrategy{ID: id, Source: SourceAPI, Strategy: st}, nil
}

// DeleteStrategy removes the managed strategy id. Messages already
// accepted with it fail to push (their delivery log says why); new sends
// naming it are refused. A stored copy the file shadows (stored before
// the file defined the ID) is deleted too, and the file's stays in force.
// CodeNotFound when no managed strategy is id; CodeConflict when the file
// defines id and no stored copy is left.
func (s *Service) DeleteStrategy(ctx context.Context, id string) error {
	found := false
	err := s.changeStrategies(ctx, func(m map[string]Strategy) bool {
		_, found = m[id]
		delete(m, id)
		return found
	})
	if err != nil {
		return err
	}
	_, inFile := s.strategies.file[id]
	switch {
	case !found && inFile:
		return herald.Errorf(herald.CodeConflict, "push strategy %q is defined in the push configuration file; change it there", id)
	case !found:
		return herald.Errorf(herald.CodeNotFound, "no push strategy %q is managed through the API", id)
	case inFile:
		s.log.Info("shadowed push strategy deleted from the store; the file's stays", "resources_id", id)
		return nil
	}
	s.log.Info("push strategy deleted", "resources_id", id)
	return nil
}

// changeStrategies applies change to the stored record by compare-and-swap,
// reading it again when another node changed it meanwhile, then to the
// mirror, and tells the other nodes. A change that reports false changed
// nothing: nothing is written.
func (s *Service) changeStrategies(ctx context.Context, change func(map[string]Strategy) bool) error {
	if s.shared == nil {
		return herald.Errorf(herald.CodeUnavailable, "this server's store keeps no managed push strategies")
	}
	s.strategies.writeMu.Lock()
	defer s.strategies.writeMu.Unlock()
	for range 16 {
		m, version, err := s.readStrategies(ctx)
		if err != nil {
			return err
		}
		if !change(m) {
			return nil
		}
		b, err := json.Marshal(m)
		if err != nil {
			return fmt.Errorf("push: encoding strategies: %w", err)
		}
		if len(b) > maxStrategyRecord {
			return herald.Errorf(herald.CodeTooLarge, "the managed push strategies would take %d bytes of JSON; the limit is %d: delete some first", len(b), maxStrategyRecord)
		}
		e, err := s.shared.PutShared(ctx, store.SharedEntry{
			Namespace: store.SharedPushStrategies, Key: strategyKey, Value: b, Expires: strategyForever, Version: version,
		}, s.cfg.Now())
		if herald.ErrorCode(err) == herald.CodeConflict {
			continue // another node changed them since the read
		}
		if err != nil {
			return storeErr("put push strategies", err)
		}
		s.setManaged(m, e.Version)
		if s.changes != nil {
			if c, ok := s.changes.(StrategyChanges); ok {
				c.StrategiesChanged()
			}
		}
		return nil
	}
	return herald.Errorf(herald.CodeUnavailable, "push strategies changed concurrently too often; try again")
}

// readStrategies reads the stored record: the managed strategies and the
// record's version (0 when there is none).
func (s *Service) readStrategies(ctx context.Context) (map[string]Strategy, int64, error) {
	e, err := s.shared.GetShared(ctx, store.SharedPushStrategies, strategyKey, s.cfg.Now())
	if herald.ErrorCode(err) == herald.CodeNotFound {
		return map[string]Strategy{}, 0, nil
	}
	if err != nil {
		return nil, 0, storeErr("read push strategies", err)
	}
	m := map[string]Strategy{}
	if err := json.Unmarshal(e.Value, &m); err != nil {
		return nil, 0, fmt.Errorf("push: the stored push strategies do not decode: %w", err)
	}
	return m, e.Version, nil
}

// setManaged puts m, the record at version, in the mirror unless the
// mirror holds that version or a later one, and reports whether it did.
func (s *Service) setManaged(m map[string]Strategy, version int64) bool {
	s.strategies.mu.Lock()
	defer s.strategies.mu.Unlock()
	if version <= s.strategies.version && s.strategies.managed != nil {
		return false
	}
	s.strategies.managed, s.strategies.version = m, version
	return true
}

// RefreshStrategies reads the managed strategies from the store into
// memory and reports whether they were newer than what this node held
// (1) or not (0). It does not wait for strategy changes on this node.
func (s *Service) RefreshStrategies(ctx context.Context) (int, error) {
	if s.shared == nil {
		return 0, nil
	}
	return s.refreshMirror(ctx)
}

func (s *Service) refreshMirror(ctx context.Context) (int, error) {
	m, version, err := s.readStrategies(ctx)
	if err != nil {
		return 0, err
	}
	if !s.setManaged(m, version) {
		return 0, nil
	}
	return 1, nil
}

// loadStrategies reads the managed strategies at start. A stored strategy
// the file now defines too is shadowed by the file's (logged).
func (s *Service) loadStrategies(ctx context.Context) (int, error) {
	if s.shared == nil {
		return 0, nil
	}
	if _, err := s.RefreshStrategies(ctx); err != nil {
		return 0, fmt.Errorf("push: load strategies: %w", err)
	}
	s.strategies.mu.RLock()
	defer s.strategies.mu.RUnlock()
	for id := range s.strategies.managed {
		if _, ok := s.strategies.file[id]; ok {
			s.log.Warn("push strategy stored through the API is shadowed by the push configuration file's", "resources_id", id)
		}
	}
	return len(s.strategies.managed), nil
}

// StrategyChanges is implemented by a Changes that also carries notices
// of strategy changes to the other nodes (internal/cluster's PushCache).
type StrategyChanges interface {
	// StrategiesChanged: this node put or deleted a managed strategy. It
	// must not block.
	StrategiesChanged()
}
