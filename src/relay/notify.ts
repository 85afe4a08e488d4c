/**
 * Tunnel notifications from the relay, as the cloud sends them: when a tunnel with a thing name
 * is opened, or its destination token rotated, the destination token goes to the thing's
 * `$aws/things/<thing>/tunnels/notify` topic (QoS 1), where `localproxy agent` (or the AWS IoT
 * Device Client) picks it up.
 */
import { LogLevel, type Logger } from '../log';
import type { BrokerOptions } from '../mqtt/broker';
import { connectBroker, type BrokerLink } from '../mqtt/link';
import { encodeNotification, isValidThingName, notificationTopic, RELAY_REGION } from '../mqtt/notification';

export { RELAY_REGION };

export interface TunnelNotifier {
  /** Sends the destination token of a tunnel to its thing; never throws (failures are logged). */
  notify(thingName: string, destinationAccessToken: string, services: string[], tunnelId?: string): void;
  close(): Promise<void>;
}

/** A notifier that publishes through one broker connection, kept up with reconnects. */
export function mqttNotifier(options: Omit<BrokerOptions, 'log'> & { log: Logger }): TunnelNotifier {
  const log = options.log;
  const broker: BrokerLink = connectBroker(options);
  return {
    notify(thingName, destinationAccessToken, services, tunnelId) {
      // A wildcard or a level separator in a topic name would make the broker drop the connection.
      if (!isValidThingName(thingName)) {
        log.limited(LogLevel.WARNING, 'notify thing name', `not notifying thing ${JSON.stringify(thingName.slice(0, 140))}: a thing name is 1-128 of a-z A-Z 0-9 : _ -`);
        return;
      }
      const payload = encodeNotification({ clientAccessToken: destinationAccessToken, clientMode: 'destination', region: RELAY_REGION, services, tunnelId });
      const topic = notificationTopic(thingName);
      // While the broker is away the message waits in MQTT.js's queue and goes out after the reconnect.
      broker.publish(topic, payload).then(
        () => log.info(`notified thing ${thingName}${tunnelId ? ` of tunnel ${tunnelId}` : ''}`),
        (err: Error) => log.error(`could not notify thing ${thingName}${tunnelId ? ` of tunnel ${tunnelId}` : ''}: ${err.message}`),
      );
    },
    close: () => broker.close(),
  };
}
