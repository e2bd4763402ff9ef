//! Every Kafka client's properties, composed in one place: the brokers and security every client
//! shares, meshguard's choices for each kind of client (each with the measurement behind it),
//! then the operator's `[kafka.consumer]` / `[kafka.producer]` overrides, which win. Pure: the
//! I/O modules turn the list into a client (`rdkafka::ClientConfig::from_iter`).

use super::Settings;

/// Which client the properties are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KafkaClient<'a> {
    /// The stream's consumer group member.
    Consumer,
    /// The side-topic producer; `Some(id)` makes it transactional (exactly-once).
    SideProducer(Option<&'a str>),
    /// The start-up connection check: the consumer's connection must work, so it takes the
    /// consumer's overrides (consumer-only keys are ignored by this client).
    Check,
    /// The admin client that creates the side topics.
    Admin,
    /// `meshguard produce`'s producer.
    Generator,
    /// `meshguard dlq replay`'s reader of the dead-letter and receipt topics: partitions are
    /// assigned by hand and read up to their end offsets at start, so it joins no group and
    /// commits nothing; read_committed, so an aborted replay's receipts are never seen.
    DlqReader,
}

/// A client's properties, in the order they are applied (a later key wins).
pub type Properties = Vec<(String, String)>;

impl Settings {
    /// The properties of `client`.
    pub fn kafka_properties(&self, client: KafkaClient<'_>) -> Properties {
        let k = &self.kafka;
        let mut p: Properties = Vec::new();
        let mut set = |key: &str, value: &str| p.push((key.to_owned(), value.to_owned()));
        set("bootstrap.servers", &k.bootstrap_servers);
        set("security.protocol", &k.security_protocol);
        // librdkafka drops the bootstrap connection after the first metadata answer and waits
        // half of this (default 100 ms) before connecting to the broker it advertises, in every
        // new client: 50 ms each for the pre-flight check, the admin client and the consumer's
        // group join at start (docs/benchmarks.md, round 4). Back-off still doubles per attempt
        // up to `reconnect.backoff.max.ms` (10 s).
        set("reconnect.backoff.ms", "20");
        for (key, value) in [
            ("sasl.mechanism", k.sasl_mechanism.as_str()),
            ("sasl.username", k.sasl_username.as_str()),
            ("sasl.password", k.sasl_password.expose()),
            ("ssl.ca.location", k.ssl_ca_location.as_str()),
        ] {
            if !value.is_empty() {
                set(key, value);
            }
        }
        match client {
            KafkaClient::Consumer => self.consumer_choices(&mut set),
            KafkaClient::SideProducer(transactional_id) => {
                set("enable.idempotence", "true");
                set("acks", "all");
                // Dead letters leave while the rest of the batch is evaluated, so the ack wait at
                // the end of a batch is short: 0.25 s per million events at 1 ms, 0.69 s at 5
                // (docs/benchmarks.md, round 3). [kafka.producer] overrides it.
                set("linger.ms", "1");
                set("compression.type", "lz4");
                // What a topic with Kafka's default max.message.bytes (1048588) accepts, so that a
                // record too large for the dead-letter topic is refused here, at once, and sent
                // without its payload, instead of failing at the broker and stalling the batch.
                // Raise both together to carry larger payloads.
                set("message.max.bytes", "1000000");
                set("delivery.timeout.ms", "30000");
                if let Some(id) = transactional_id {
                    set("transactional.id", id);
                    set("transaction.timeout.ms", "60000");
                }
            }
            KafkaClient::Generator => {
                set("enable.idempotence", "true");
                set("linger.ms", "5");
                set("batch.num.messages", "10000");
                set("compression.type", "lz4");
                set("message.timeout.ms", "30000");
            }
            KafkaClient::Check | KafkaClient::Admin | KafkaClient::DlqReader => {}
        }
        let overrides = match client {
            KafkaClient::Consumer | KafkaClient::Check | KafkaClient::DlqReader => &k.consumer,
            KafkaClient::SideProducer(_) | KafkaClient::Admin | KafkaClient::Generator => &k.producer,
        };
        for (key, value) in overrides {
            set(key, value);
        }
        match client {
            KafkaClient::Check => {
                // Reconnects back off from 20 ms up to 10 s, so a broker that refuses us is not
                // hammered while we wait. Not from 1 s: the first metadata request fails while the
                // client moves from the bootstrap address to the broker it advertises, and a 1 s
                // backoff made every start wait ~0.5 s for the retry.
                set("reconnect.backoff.max.ms", "10000");
                // One topic's metadata, not the whole cluster's (2,293 topics on the test broker:
                // +32 ms); never creating it on a broker with auto.create.topics.enable (a
                // producer-type client would).
                set("allow.auto.create.topics", "false");
            }
            // Asking for a missing topic's metadata must not create it with the broker's defaults.
            KafkaClient::Admin => set("allow.auto.create.topics", "false"),
            KafkaClient::DlqReader => {
                // After the overrides: an operator's consumer group.id or auto-commit must not
                // make the replay commit offsets anywhere. librdkafka refuses `assign` without a
                // group.id; this group is never joined and never committed to.
                set("group.id", &format!("{}.dlq-replay", self.kafka.group_id));
                set("enable.auto.commit", "false");
                set("enable.auto.offset.store", "false");
                set("isolation.level", "read_committed");
                set("enable.partition.eof", "true");
                set("allow.auto.create.topics", "false");
            }
            _ => {}
        }
        p
    }

    fn consumer_choices(&self, set: &mut impl FnMut(&str, &str)) {
        let exactly_once = self.delivery.exactly_once;
        set("group.id", &self.kafka.group_id);
        set("partition.assignment.strategy", "cooperative-sticky");
        set("enable.auto.offset.store", "false");
        set("enable.auto.commit", if exactly_once { "false" } else { "true" });
        set("auto.commit.interval.ms", "1000");
        set("auto.offset.reset", "earliest");
        set("isolation.level", "read_committed");
        set("session.timeout.ms", "10000");
        set("heartbeat.interval.ms", "2000");
        set("statistics.interval.ms", "5000");
        set("fetch.wait.max.ms", "50");
        // librdkafka prefetches up to 64 MB by default, most of the resident memory under a
        // backlog (docs/benchmarks.md: 233 MB at 3 KB events). 4 MB still holds ~10,000 of the
        // seed's events, two batches; 16 MB made no more events/s but 210 instead of 124 MB RSS.
        set("queued.max.messages.kbytes", "4096");
        // When that queue is full librdkafka postpones the partition's next fetch by this much
        // (default 1000 ms): the stream drained the queue and then sat idle for most of each
        // second (docs/benchmarks.md: 111k → 211k events/s with 10 ms).
        set("fetch.queue.backoff.ms", "10");
        // The prefetch bound above is checked before a fetch, not during one: a fetch response
        // (up to 1 MB per partition, 50 MB in all, by default) is decompressed whole into the
        // queue. Compressed records that shrink well made that overshoot most of the resident
        // memory (docs/benchmarks.md, round 4: 30 KB events, lz4, 176-210 MB peak; 107-112 MB
        // with these bounds). Same events/s at 0.3 and 30 KB.
        set("fetch.max.bytes", "1048576");
        set("max.partition.fetch.bytes", "262144");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value<'p>(p: &'p Properties, key: &str) -> Option<&'p str> {
        p.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    #[test]
    fn overrides_win_and_each_client_gets_its_own_choices() -> Result<(), crate::config::ConfigError> {
        let mut s = Settings::defaults()?;
        let _ = s.kafka.consumer.insert("fetch.max.bytes".into(), "2097152".into());
        let _ = s.kafka.producer.insert("linger.ms".into(), "7".into());
        let consumer = s.kafka_properties(KafkaClient::Consumer);
        assert_eq!(value(&consumer, "fetch.max.bytes"), Some("2097152"));
        assert_eq!(value(&consumer, "group.id"), Some("meshguard"));
        assert_eq!(value(&s.kafka_properties(KafkaClient::SideProducer(None)), "linger.ms"), Some("7"));
        assert_eq!(value(&s.kafka_properties(KafkaClient::SideProducer(None)), "transactional.id"), None);
        assert_eq!(value(&s.kafka_properties(KafkaClient::SideProducer(Some("t-1"))), "transactional.id"), Some("t-1"));
        let check = s.kafka_properties(KafkaClient::Check);
        assert_eq!(value(&check, "fetch.max.bytes"), Some("2097152"));
        assert_eq!(value(&check, "allow.auto.create.topics"), Some("false"));
        assert_eq!(value(&s.kafka_properties(KafkaClient::Admin), "group.id"), None);
        // The replay's reader commits nothing, whatever the consumer overrides say.
        let _ = s.kafka.consumer.insert("enable.auto.commit".into(), "true".into());
        let reader = s.kafka_properties(KafkaClient::DlqReader);
        assert_eq!(value(&reader, "enable.auto.commit"), Some("false"));
        assert_eq!(value(&reader, "group.id"), Some("meshguard.dlq-replay"));
        assert_eq!(value(&reader, "isolation.level"), Some("read_committed"));
        assert_eq!(value(&reader, "fetch.max.bytes"), Some("2097152"));
        Ok(())
    }
}
