-- What a device's badge counts (herald.BadgeKind): '' none the server
-- owns, 'total' the user's unread total, 'counted' the app's own count
-- plus increments. Every node reads it to decide a read's badge updates.
-- Rows stored before it get '': no update until their next badge push.
ALTER TABLE push_devices ADD COLUMN badge_kind TEXT NOT NULL DEFAULT '';
