DROP TABLE auto_replies;
DROP TABLE templates;
DROP TABLE reminders;
DROP TABLE payments;
DROP TABLE payment_schedules;
DROP TABLE packages;
DROP TABLE jamaah;
