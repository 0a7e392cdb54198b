#!/bin/sh
# Format a fresh KRaft log directory and start a single-node Kafka (broker + controller) on 9092 / 9093.
set -euf  # -f: the class path wildcard is for java, not the shell
host="${KAFKA_ADVERTISED_HOST:-$(hostname -i | cut -d' ' -f1)}"
dir=/tmp/kafka
mkdir -p "$dir"
cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:9093
listeners=PLAINTEXT://0.0.0.0:9092,CONTROLLER://127.0.0.1:9093
advertised.listeners=PLAINTEXT://$host:9092
controller.listener.names=CONTROLLER
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$dir/data
num.partitions=1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
# One core's worth of a small JVM: serial GC, C1 only (starts in seconds on the test bed's 2 shared cores).
JAVA="java -Xms64m -Xmx384m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Dlog4j2.configurationFile=/opt/kafka/log4j2.properties -cp /opt/kafka/libs/*"
[ -f "$dir/data/meta.properties" ] || $JAVA kafka.tools.StorageTool format -c "$dir/server.properties" \
  -t "$($JAVA kafka.tools.StorageTool random-uuid)"
exec $JAVA kafka.Kafka "$dir/server.properties"
