package meshguard.bench;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.networknt.schema.JsonSchema;
import com.networknt.schema.JsonSchemaFactory;
import com.networknt.schema.SpecVersion;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Properties;
import java.util.concurrent.CountDownLatch;
import org.apache.kafka.common.serialization.Serdes;
import org.apache.kafka.streams.KafkaStreams;
import org.apache.kafka.streams.StreamsBuilder;
import org.apache.kafka.streams.StreamsConfig;
import org.apache.kafka.streams.kstream.Consumed;
import org.apache.kafka.streams.kstream.Produced;
import org.apache.kafka.streams.processor.api.FixedKeyProcessor;
import org.apache.kafka.streams.processor.api.FixedKeyProcessorContext;
import org.apache.kafka.streams.processor.api.FixedKeyRecord;

/**
 * What a JVM team would write: Kafka Streams, Jackson, networknt json-schema-validator (draft 7).
 * Valid records are dropped after validation; invalid ones go to the dead-letter topic with the
 * source topic/partition/offset in headers. At-least-once (the Streams default).
 *
 * <p>Environment: BOOTSTRAP, TOPIC, GROUP (the application.id), DLQ, SCHEMA.
 */
public final class Peer {
  private Peer() {}

  public static void main(String[] args) throws Exception {
    ObjectMapper mapper = new ObjectMapper();
    JsonSchema schema =
        JsonSchemaFactory.getInstance(SpecVersion.VersionFlag.V7)
            .getSchema(mapper.readTree(Files.readString(Path.of(System.getenv("SCHEMA")))));

    Properties props = new Properties();
    props.put(StreamsConfig.APPLICATION_ID_CONFIG, System.getenv("GROUP"));
    props.put(StreamsConfig.BOOTSTRAP_SERVERS_CONFIG, System.getenv("BOOTSTRAP"));
    props.put(StreamsConfig.COMMIT_INTERVAL_MS_CONFIG, 100);
    props.put(StreamsConfig.consumerPrefix("auto.offset.reset"), "earliest");
    props.put(StreamsConfig.producerPrefix("compression.type"), "lz4");
    props.put(StreamsConfig.producerPrefix("linger.ms"), 5);

    StreamsBuilder builder = new StreamsBuilder();
    builder.stream(System.getenv("TOPIC"), Consumed.with(Serdes.ByteArray(), Serdes.ByteArray()))
        .processValues(() -> new Validate(mapper, schema))
        .to(System.getenv("DLQ"), Produced.with(Serdes.ByteArray(), Serdes.ByteArray()));

    KafkaStreams streams = new KafkaStreams(builder.build(), props);
    CountDownLatch stopped = new CountDownLatch(1);
    Runtime.getRuntime().addShutdownHook(new Thread(() -> {
      streams.close();
      stopped.countDown();
    }));
    streams.start();
    stopped.await();
  }

  /** Forwards only records that fail to parse or to validate, with the reason in headers. */
  static final class Validate implements FixedKeyProcessor<byte[], byte[], byte[]> {
    private final ObjectMapper mapper;
    private final JsonSchema schema;
    private FixedKeyProcessorContext<byte[], byte[]> context;

    Validate(ObjectMapper mapper, JsonSchema schema) {
      this.mapper = mapper;
      this.schema = schema;
    }

    @Override
    public void init(FixedKeyProcessorContext<byte[], byte[]> context) {
      this.context = context;
    }

    @Override
    public void process(FixedKeyRecord<byte[], byte[]> record) {
      String klass;
      try {
        JsonNode node = mapper.readTree(record.value());
        if (schema.validate(node).isEmpty()) {
          return;
        }
        klass = "contract_violation";
      } catch (Exception e) {
        klass = "json_syntax";
      }
      var meta = context.recordMetadata().orElseThrow();
      record.headers()
          .add("meshguard.source.topic", meta.topic().getBytes(StandardCharsets.UTF_8))
          .add("meshguard.source.partition", Integer.toString(meta.partition()).getBytes(StandardCharsets.UTF_8))
          .add("meshguard.source.offset", Long.toString(meta.offset()).getBytes(StandardCharsets.UTF_8))
          .add("meshguard.error.class", klass.getBytes(StandardCharsets.UTF_8));
      context.forward(record);
    }
  }
}
