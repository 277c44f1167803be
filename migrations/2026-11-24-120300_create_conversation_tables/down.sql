DROP TABLE media;
DROP TABLE message_statuses;
DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE contacts;
