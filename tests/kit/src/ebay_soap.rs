//! A Platform Notification as eBay's Trading API sends it: a SOAP envelope with the signature in
//! its header and the response in its body. One template for the ebay-legacy scheme's unit
//! tests, its bench and its fuzz seeds, and for the ebay adapter's bench and fuzz seeds.

/// `<{response}>` (e.g. `GetItemResponse`) signed with `signature` at `timestamp`; `inner`
/// follows the fields every response has.
pub fn notification(response: &str, signature: &str, timestamp: &str, inner: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:xsd="http://www.w3.org/2001/XMLSchema" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <soapenv:Header>
  <ebl:RequesterCredentials soapenv:mustUnderstand="0" xmlns:ns="urn:ebay:apis:eBLBaseComponents" xmlns:ebl="urn:ebay:apis:eBLBaseComponents">
   <ebl:NotificationSignature xmlns:ebl="urn:ebay:apis:eBLBaseComponents">{signature}</ebl:NotificationSignature>
  </ebl:RequesterCredentials>
 </soapenv:Header>
 <soapenv:Body>
  <{response} xmlns="urn:ebay:apis:eBLBaseComponents">
   <Timestamp>{timestamp}</Timestamp>
   <Ack>Success</Ack>
   <CorrelationID>1234567890</CorrelationID>
   <Version>1173</Version>
   <RecipientUserID>seller_one</RecipientUserID>
   {inner}
  </{response}>
 </soapenv:Body>
</soapenv:Envelope>"#
    )
}

/// An `ItemSold` notification's event name and item (10 listed, 3 sold), for `GetItemResponse`.
pub const ITEM_SOLD: &str = "<NotificationEventName>ItemSold</NotificationEventName>
   <Item>
    <ItemID>110551234567</ItemID>
    <Quantity>10</Quantity>
    <SellingStatus><QuantitySold>3</QuantitySold></SellingStatus>
    <SKU>MUG-&amp;-CO</SKU>
    <Title>Mug</Title>
   </Item>";
