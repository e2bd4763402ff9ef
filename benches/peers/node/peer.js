// The seed's own stack (shared/seed/data-mesh-pattern.md, "Data Mesh Governance Service"),
// written after its JavaScript and put behind the Kafka consumer a Node team would write with
// kafkajs. Per event, as the seed does: Ajv validation, then calculateQualityMetrics (freshness,
// completeness, one MySQL query for accuracy), then trackDataLineage (one MongoDB insertOne).
// Invalid events (the seed throws "Schema validation failed") go to the dead-letter topic.
//
// Deviations from the seed, each needed to run it at all:
// - ajv-formats is added: Ajv 8 in its default strict mode refuses the seed's schema
//   (`unknown format "uuid"`), so the seed's code cannot compile its contract without it.
// - loadDataProducts is awaited (the seed's constructor starts it without waiting) and reads the
//   product from the YAML into its own MongoDB database first, where the seed expects it.
// - mysql-client returns the rows (mysql2's promise API returns [rows, fields]).
// - Contract schema paths resolve against the repository root.
// - kafkajs-lz4 is registered: kafkajs cannot read LZ4 batches (what meshguard's generator writes)
//   without a codec.
//
// Environment: BOOTSTRAP, TOPIC, GROUP, DLQ, PRODUCT_YAML, REPO, MYSQL_URL, MONGODB_URL,
// MONGODB_DB; MODE=full (default: the seed's per-event work) or MODE=validate (validate+DLQ only).
"use strict";

const fs = require("fs");
const path = require("path");
const { Kafka, logLevel, CompressionTypes, CompressionCodecs } = require("kafkajs");
const LZ4Codec = require("kafkajs-lz4");
const Ajv = require("ajv");
const addFormats = require("ajv-formats");
const yaml = require("js-yaml");
const mysqlDriver = require("mysql2/promise");
const { MongoClient } = require("mongodb");

const env = (k, d) => process.env[k] ?? d;
const MODE = env("MODE", "full");
const REPO = env("REPO", process.cwd());

// ---- ./mysql-client and ./mongodb-client, the modules the seed requires ----
const mysqlPool = MODE === "full" ? mysqlDriver.createPool({ uri: env("MYSQL_URL"), connectionLimit: 4 }) : null;
const mysql = {
  async query(sql, params) {
    const [rows] = await mysqlPool.query(sql, params);
    return rows;
  },
};
let mongoDb = null;
const mongodb = { collection: (name) => mongoDb.collection(name) };

// ---- The seed's DataMeshGovernance, as written (only the methods the stream uses) ----
CompressionCodecs[CompressionTypes.LZ4] = new LZ4Codec().codec;
process.env.KAFKAJS_NO_PARTITIONER_WARNING = "1";

const ajv = new Ajv({ allErrors: true });
addFormats(ajv);

class DataMeshGovernance {
  constructor() {
    this.dataProducts = new Map();
    this.contracts = new Map();
  }

  async loadDataProducts() {
    const products = await mongodb.collection("data_products").find({}).toArray();
    for (const product of products) {
      this.dataProducts.set(product.metadata.name, product);
      for (const contract of product.spec.contracts) {
        const contractSchema = await this.loadContractSchema(contract.schema);
        this.contracts.set(`${product.metadata.name}:${contract.name}`, {
          product: product.metadata.name,
          contract: contract,
          schema: contractSchema,
          validator: ajv.compile(contractSchema),
        });
      }
    }
  }

  async loadContractSchema(schemaPath) {
    return JSON.parse(fs.readFileSync(path.join(REPO, schemaPath), "utf8"));
  }

  async validateDataContract(dataProductName, contractName, data) {
    const contractKey = `${dataProductName}:${contractName}`;
    const contract = this.contracts.get(contractKey);
    if (!contract) {
      throw new Error(`Contract not found: ${contractKey}`);
    }
    const valid = contract.validator(data);
    if (!valid) {
      const errors = contract.validator.errors;
      throw new Error(`Schema validation failed: ${JSON.stringify(errors)}`);
    }
    if (MODE !== "full") {
      return { valid: true };
    }
    const qualityMetrics = await this.calculateQualityMetrics(dataProductName, data);
    const qualityContract = contract.contract.quality;
    const qualityIssues = [];
    if (qualityMetrics.freshness > qualityContract.freshness) {
      qualityIssues.push({ metric: "freshness", actual: qualityMetrics.freshness, expected: qualityContract.freshness });
    }
    if (qualityMetrics.completeness < qualityContract.completeness) {
      qualityIssues.push({ metric: "completeness", actual: qualityMetrics.completeness, expected: qualityContract.completeness });
    }
    if (qualityMetrics.accuracy < qualityContract.accuracy) {
      qualityIssues.push({ metric: "accuracy", actual: qualityMetrics.accuracy, expected: qualityContract.accuracy });
    }
    if (qualityIssues.length > 0) {
      await this.alertDataQualityIssue(dataProductName, qualityIssues);
    }
    return { valid: true, qualityMetrics, qualityIssues };
  }

  async calculateQualityMetrics(dataProductName, data) {
    const product = this.dataProducts.get(dataProductName);
    const freshness = await this.calculateFreshness(dataProductName, data);
    const completeness = this.calculateCompleteness(data, product.spec.contracts[0].schema);
    const accuracy = await this.calculateAccuracy(dataProductName, data);
    return { freshness, completeness, accuracy, calculated_at: new Date() };
  }

  async calculateFreshness(dataProductName, data) {
    if (data.updated_at) {
      const updatedAt = new Date(data.updated_at);
      const now = new Date();
      return (now - updatedAt) / 1000;
    }
    return 0;
  }

  calculateCompleteness(data, schema) {
    const requiredFields = this.getRequiredFields(schema);
    const presentFields = requiredFields.filter((field) => data[field] !== undefined && data[field] !== null);
    return (presentFields.length / requiredFields.length) * 100;
  }

  getRequiredFields(schema) {
    const required = [];
    const traverse = (obj, path = "") => {
      if (obj.required) {
        for (const field of obj.required) {
          required.push(path ? `${path}.${field}` : field);
        }
      }
      if (obj.properties) {
        for (const [key, value] of Object.entries(obj.properties)) {
          traverse(value, path ? `${path}.${key}` : key);
        }
      }
    };
    traverse(schema);
    return required;
  }

  async calculateAccuracy(dataProductName, data) {
    if (dataProductName === "payments-data-product" && data.payment_id) {
      const sourcePayment = await mysql.query(`SELECT amount FROM payments WHERE payment_id = ?`, [data.payment_id]);
      if (sourcePayment.length > 0) {
        const sourceAmount = parseFloat(sourcePayment[0].amount);
        const dataAmount = parseFloat(data.amount);
        if (Math.abs(sourceAmount - dataAmount) < 0.01) {
          return 100;
        } else {
          return 0;
        }
      }
    }
    return 100;
  }

  async trackDataLineage(source, destination, transformation) {
    const lineageRecord = {
      lineage_id: require("crypto").randomUUID(),
      source: { system: source.system, table: source.table, record_id: source.record_id, timestamp: new Date() },
      destination: {
        system: destination.system,
        collection: destination.collection,
        document_id: destination.document_id,
        timestamp: new Date(),
      },
      transformation: transformation,
      created_at: new Date(),
    };
    await mongodb.collection("data_lineage").insertOne(lineageRecord);
    return lineageRecord.lineage_id;
  }

  async alertDataQualityIssue(dataProductName, issues) {
    const alert = { severity: "warning", data_product: dataProductName, issues, timestamp: new Date() };
    console.error("[DataMesh] Quality issue detected:", alert);
    await mongodb.collection("data_quality_alerts").insertOne(alert);
  }
}

// ---- The stream around it ----
async function main() {
  const product = yaml.load(fs.readFileSync(env("PRODUCT_YAML"), "utf8"));
  const productName = product.metadata.name;
  const contractName = product.spec.contracts[0].name;
  let mongoClient = null;
  if (MODE === "full") {
    mongoClient = new MongoClient(env("MONGODB_URL"));
    await mongoClient.connect();
    mongoDb = mongoClient.db(env("MONGODB_DB"));
    await mongoDb.collection("data_products").replaceOne({ "metadata.name": productName }, product, { upsert: true });
  } else {
    // validate mode: the same contract loading, without a database.
    const docs = [product];
    mongoDb = { collection: () => ({ find: () => ({ toArray: async () => docs }) }) };
  }
  const governance = new DataMeshGovernance();
  await governance.loadDataProducts();

  const kafka = new Kafka({ clientId: "node-peer", brokers: env("BOOTSTRAP").split(","), logLevel: logLevel.WARN });
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const consumer = kafka.consumer({ groupId: env("GROUP") });
  await consumer.connect();
  await consumer.subscribe({ topic: env("TOPIC"), fromBeginning: true });
  const dlq = env("DLQ");
  const stop = async () => {
    await consumer.disconnect().catch(() => {});
    await producer.disconnect().catch(() => {});
    if (mongoClient) await mongoClient.close().catch(() => {});
    if (mysqlPool) await mysqlPool.end().catch(() => {});
    process.exit(0);
  };
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);

  await consumer.run({
    autoCommitInterval: 100,
    eachMessage: async ({ topic, partition, message }) => {
      let data;
      try {
        data = JSON.parse(message.value.toString("utf8"));
        await governance.validateDataContract(productName, contractName, data);
      } catch (err) {
        await producer.send({
          topic: dlq,
          acks: -1,
          messages: [
            {
              key: message.key,
              value: message.value,
              headers: {
                "meshguard.source.topic": topic,
                "meshguard.source.partition": String(partition),
                "meshguard.source.offset": String(message.offset),
                "meshguard.error.class": data === undefined ? "json_syntax" : "contract_violation",
              },
            },
          ],
        });
        return;
      }
      if (MODE === "full") {
        await governance.trackDataLineage(
          { system: "kafka", table: topic, record_id: data.payment_id },
          { system: "mongodb", collection: productName, document_id: data.payment_id },
          "contract_validation"
        );
      }
    },
  });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
