-- meshguard: the banking database that the data products read and reconcile against.
-- Idempotent: safe to apply on every start (testcontainers/up does) and by the MariaDB image's
-- /docker-entrypoint-initdb.d on first start (testcontainers/compose.yaml).
-- Money is DECIMAL(18,2); times are UTC, DATETIME(6). No foreign keys: each domain's tables
-- are loaded independently by its pipelines.

CREATE DATABASE IF NOT EXISTS banking
  CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;

USE banking;

-- payments domain ---------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS payments (
  payment_id  CHAR(36)      NOT NULL,
  customer_id BIGINT        NOT NULL,
  amount      DECIMAL(18,2) NOT NULL,
  currency    CHAR(3)       NOT NULL,
  status      VARCHAR(16)   NOT NULL,
  created_at  DATETIME(6)   NOT NULL,
  updated_at  DATETIME(6)   NULL,
  PRIMARY KEY (payment_id),
  KEY payments_customer (customer_id),
  KEY payments_status_created (status, created_at)
) ENGINE=InnoDB;

-- How a payment was made (the payment event's payment_method object), one row per payment.
CREATE TABLE IF NOT EXISTS payment_methods (
  payment_id  CHAR(36)    NOT NULL,
  type        VARCHAR(8)  NOT NULL,
  last_four   CHAR(4)     NULL,
  created_at  DATETIME(6) NOT NULL,
  updated_at  DATETIME(6) NULL,
  PRIMARY KEY (payment_id)
) ENGINE=InnoDB;

-- The ledger movements behind a payment: one row per attempt, capture, refund or reversal.
CREATE TABLE IF NOT EXISTS payment_transactions (
  transaction_id CHAR(36)      NOT NULL,
  payment_id     CHAR(36)      NOT NULL,
  kind           VARCHAR(16)   NOT NULL,
  amount         DECIMAL(18,2) NOT NULL,
  currency       CHAR(3)       NOT NULL,
  status         VARCHAR(16)   NOT NULL,
  created_at     DATETIME(6)   NOT NULL,
  updated_at     DATETIME(6)   NULL,
  PRIMARY KEY (transaction_id),
  KEY payment_transactions_payment (payment_id)
) ENGINE=InnoDB;

-- loans domain ------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS loans (
  loan_id     CHAR(36)      NOT NULL,
  customer_id BIGINT        NOT NULL,
  principal   DECIMAL(18,2) NOT NULL,
  currency    CHAR(3)       NOT NULL,
  status      VARCHAR(16)   NOT NULL,
  created_at  DATETIME(6)   NOT NULL,
  updated_at  DATETIME(6)   NULL,
  PRIMARY KEY (loan_id),
  KEY loans_customer (customer_id)
) ENGINE=InnoDB;

-- cards domain ------------------------------------------------------------------------------

CREATE TABLE IF NOT EXISTS card_transactions (
  transaction_id CHAR(36)      NOT NULL,
  card_id        CHAR(36)      NOT NULL,
  customer_id    BIGINT        NOT NULL,
  amount         DECIMAL(18,2) NOT NULL,
  currency       CHAR(3)       NOT NULL,
  status         VARCHAR(16)   NOT NULL,
  created_at     DATETIME(6)   NOT NULL,
  updated_at     DATETIME(6)   NULL,
  PRIMARY KEY (transaction_id),
  KEY card_transactions_card (card_id),
  KEY card_transactions_customer (customer_id)
) ENGINE=InnoDB;
