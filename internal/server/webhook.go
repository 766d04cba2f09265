package server

import (
	"log/slog"
	"net/url"

	"github.com/herald-im/herald"
	"github.com/herald-im/herald/internal/chat"
	"github.com/herald-im/herald/internal/config"
	"github.com/herald-im/herald/internal/webhook"
)

// eventSink is the Events interface gateway, chat and call each declare.
type eventSink interface{ Emit(herald.Event) }

// webhookSetup builds the callback service (docs/webhooks.md) and returns
// it with the event sink and the before_send check to hand the producers;
// each is nil when its URL is not configured.
func webhookSetup(cfg config.Config, secret []byte, log *slog.Logger) (*webhook.Service, eventSink, chat.BeforeSend) {
	if cfg.WebhookURL == "" && cfg.WebhookBeforeSendURL == "" {
		return nil, nil, nil
	}
	h := webhook.New(webhook.Config{
		URL: cfg.WebhookURL, Secret: secret, Queue: cfg.WebhookQueue,
		BeforeSendURL: cfg.WebhookBeforeSendURL, BeforeSendTimeout: cfg.WebhookBeforeSendTimeout,
		BeforeSendReject: cfg.WebhookBeforeSendFallback == "reject",
		Backoff:          cfg.WebhookBackoff,
		Logger:           log,
	})
	var ev eventSink
	if cfg.WebhookURL != "" {
		ev = h
		log.Info("callbacks on", "host", hostOf(cfg.WebhookURL), "queue", cfg.WebhookQueue)
	}
	var bs chat.BeforeSend
	if cfg.WebhookBeforeSendURL != "" {
		bs = h
		log.Info("before_send on", "host", hostOf(cfg.WebhookBeforeSendURL), "timeout", cfg.WebhookBeforeSendTimeout, "fallback", cfg.WebhookBeforeSendFallback)
	}
	return h, ev, bs
}

// hostOf is what is logged of a callback URL: its path or query may hold
// a credential.
func hostOf(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Host
}

// Webhooks exposes the callback service for tests and metrics; nil when
// no callback URL is configured.
func (s *Server) Webhooks() *webhook.Service { return s.hooks }
