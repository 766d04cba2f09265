// Package push owns offline push: device registration and binding, the push
// decision (who gets pushed for a message; never a recipient who muted the
// conversation), the durable outbox dispatcher with its retries (shared by
// several nodes through leases on the outbox's jobs: Config.Node,
// dispatch.go), and the delivery log. Vendors sit behind the Provider interface, one package each
// (apns/, fcm/, hms/, webpush/).
package push
