// Package push owns offline push: device registration and binding, the push
// decision (who gets pushed for a message; never a recipient who muted the
// conversation), the durable outbox dispatcher with its retries, and the
// delivery log. Vendors sit behind the Provider interface, one package each
// (apns/, fcm/, hms/, webpush/).
package push
