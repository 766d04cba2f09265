-- Herald schema, version 6: the device a message was sent from (its
-- device_id), so the offline sync of that device can leave out what it
-- sent itself. NULL for server API sends and for messages stored before.
ALTER TABLE messages ADD COLUMN sender_device TEXT;
