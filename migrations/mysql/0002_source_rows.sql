-- meshguard: tables the shipped data products declare beyond 0001, and card rows that the
-- event generator writes without a card id. Idempotent.

USE banking;

CREATE TABLE IF NOT EXISTS loan_applications (
  application_id   CHAR(36)      NOT NULL,
  customer_id      BIGINT        NOT NULL,
  requested_amount DECIMAL(18,2) NOT NULL,
  currency         CHAR(3)       NOT NULL,
  status           VARCHAR(16)   NOT NULL,
  created_at       DATETIME(6)   NOT NULL,
  updated_at       DATETIME(6)   NULL,
  PRIMARY KEY (application_id),
  KEY loan_applications_customer (customer_id)
) ENGINE=InnoDB;

ALTER TABLE card_transactions MODIFY card_id CHAR(36) NULL;
